//! Budget periods and their windows: `N` minutes, hours, days, weeks, months or years, either
//! running from the first use after the last reset, or aligned to UTC calendar boundaries.

use chrono::{DateTime, Datelike, Duration, Months, TimeZone, Utc};

/// A period unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `m`
    Minute,
    /// `h`
    Hour,
    /// `d`
    Day,
    /// `w`
    Week,
    /// `M`
    Month,
    /// `y`
    Year,
}

/// `1d`, `30m`, `1M`...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// How many units.
    pub n: u32,
    /// Which unit.
    pub unit: Unit,
}

impl Period {
    /// Parses `<count><unit>` with unit `m`, `h`, `d`, `w`, `M` (month) or `y`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not a period: a count and a unit, one of m (minutes), h, d, w, M (months), y, e.g. `1d` or `30m`"
            )
        };
        let s = s.trim();
        let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, unit) = s.split_at(unit_at);
        let n: u32 = num.parse().map_err(|_| bad())?;
        if n == 0 || n > 1000 {
            return Err(bad());
        }
        let unit = match unit {
            "m" => Unit::Minute,
            "h" => Unit::Hour,
            "d" => Unit::Day,
            "w" => Unit::Week,
            "M" => Unit::Month,
            "y" => Unit::Year,
            _ => return Err(bad()),
        };
        Ok(Self { n, unit })
    }

    /// The length of a period of minutes, hours, days or weeks in ms (`None` for months and
    /// years, whose length depends on the calendar).
    fn fixed_ms(self) -> Option<i64> {
        let unit: i64 = match self.unit {
            Unit::Minute => 60_000,
            Unit::Hour => 3_600_000,
            Unit::Day => 86_400_000,
            Unit::Week => 604_800_000,
            Unit::Month | Unit::Year => return None,
        };
        Some(unit * i64::from(self.n))
    }

    fn fixed(self) -> Option<Duration> {
        let n = i64::from(self.n);
        Some(match self.unit {
            Unit::Minute => Duration::minutes(n),
            Unit::Hour => Duration::hours(n),
            Unit::Day => Duration::days(n),
            Unit::Week => Duration::weeks(n),
            Unit::Month | Unit::Year => return None,
        })
    }

    /// The end of the window that starts at `start`.
    pub fn end_of(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match (self.fixed(), self.unit) {
            (Some(d), _) => start + d,
            (None, Unit::Month) => start
                .checked_add_months(Months::new(self.n))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            (None, _) => start
                .checked_add_months(Months::new(self.n.saturating_mul(12)))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// The calendar-aligned window holding `now`: its start (UTC boundaries; weeks start on Monday).
    pub fn aligned_start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let n = i64::from(self.n);
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        match self.unit {
            Unit::Minute | Unit::Hour | Unit::Day => {
                let step = self.fixed().map_or(1, |d| d.num_seconds()).max(1);
                let secs = now.timestamp();
                epoch + Duration::seconds(secs - secs.rem_euclid(step))
            }
            Unit::Week => {
                // 1970-01-05 was a Monday.
                let monday = Utc
                    .with_ymd_and_hms(1970, 1, 5, 0, 0, 0)
                    .single()
                    .unwrap_or(epoch);
                let step = 7 * 86_400 * n;
                let secs = (now - monday).num_seconds();
                monday + Duration::seconds(secs - secs.rem_euclid(step))
            }
            Unit::Month | Unit::Year => {
                let per = if self.unit == Unit::Month { n } else { 12 * n };
                let months = i64::from(now.year() - 1970) * 12 + i64::from(now.month0());
                let start = months - months.rem_euclid(per);
                let (y, m) = (1970 + start.div_euclid(12), start.rem_euclid(12) + 1);
                Utc.with_ymd_and_hms(y as i32, m as u32, 1, 0, 0, 0)
                    .single()
                    .unwrap_or(epoch)
            }
        }
    }
}

/// 1970-01-05T00:00:00Z, a Monday, in ms: where calendar weeks start.
const MONDAY_MS: i64 = 4 * 86_400_000;

/// When a budget's window resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Never.
    Never,
    /// A period after the first use following the last reset.
    Rolling(Period),
    /// On calendar boundaries.
    Calendar(Period),
}

impl Window {
    /// The window for a budget's period and alignment.
    pub fn new(period: Option<Period>, aligned: bool) -> Self {
        match (period, aligned) {
            (None, _) => Self::Never,
            (Some(p), false) => Self::Rolling(p),
            (Some(p), true) => Self::Calendar(p),
        }
    }

    /// Given the stored window start (ms; 0 = none yet) and now, the current window's start and
    /// end in ms (end `None`: never), and whether it is a new window (counters reset).
    pub fn current(self, start_ms: i64, now: DateTime<Utc>) -> (i64, Option<i64>, bool) {
        // Periods of a fixed length are whole milliseconds: no calendar needed (every admitted
        // request asks this of each budget and limit on its chain).
        let now_ms = now.timestamp_millis();
        match self {
            Self::Calendar(p) if let Some(len) = p.fixed_ms() => {
                // Minutes, hours and days align to the epoch, weeks to Monday 1970-01-05.
                let origin = if p.unit == Unit::Week { MONDAY_MS } else { 0 };
                let s = now_ms - (now_ms - origin).rem_euclid(len);
                return (s, Some(s.saturating_add(len)), s != start_ms);
            }
            Self::Rolling(p) if let Some(len) = p.fixed_ms() => {
                let end = start_ms.saturating_add(len);
                return if start_ms > 0 && now_ms < end {
                    (start_ms, Some(end), false)
                } else {
                    (now_ms, Some(now_ms.saturating_add(len)), true)
                };
            }
            _ => {}
        }
        let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(now);
        match self {
            Self::Never => (start_ms, None, false),
            Self::Calendar(p) => {
                let s = p.aligned_start(now);
                let e = p.end_of(s);
                let ms = s.timestamp_millis();
                (ms, Some(e.timestamp_millis()), ms != start_ms)
            }
            Self::Rolling(p) => {
                let end = (start_ms > 0).then(|| p.end_of(at(start_ms)));
                if let Some(end) = end.filter(|e| now < *e) {
                    (start_ms, Some(end.timestamp_millis()), false)
                } else {
                    let ms = now.timestamp_millis();
                    (ms, Some(p.end_of(now).timestamp_millis()), true)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses() {
        assert_eq!(Period::parse("1M").unwrap().unit, Unit::Month);
        assert_eq!(
            Period::parse("30m").unwrap(),
            Period {
                n: 30,
                unit: Unit::Minute
            }
        );
        for bad in ["3x", "", "d", "0d", "-1d", "1.5h", "1dd"] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn calendar_windows() {
        let now = t("2026-12-16T13:45:10Z");
        let p = |s| Period::parse(s).unwrap();
        assert_eq!(p("1d").aligned_start(now), t("2026-12-16T00:00:00Z"));
        assert_eq!(p("1h").aligned_start(now), t("2026-12-16T13:00:00Z"));
        assert_eq!(p("1w").aligned_start(now), t("2026-12-14T00:00:00Z"));
        assert_eq!(p("1M").aligned_start(now), t("2026-12-01T00:00:00Z"));
        assert_eq!(
            p("1M").end_of(t("2026-12-01T00:00:00Z")),
            t("2027-01-01T00:00:00Z")
        );
        assert_eq!(p("1y").aligned_start(now), t("2026-01-01T00:00:00Z"));
    }

    /// The windows of fixed-length periods, worked out in milliseconds, are the ones the
    /// calendar gives (`aligned_start`, `end_of`), across many instants, periods and starts.
    #[test]
    fn fixed_length_windows_match_the_calendar() {
        let periods = [
            "1m", "7m", "45m", "1h", "5h", "1d", "3d", "1w", "2w", "1000d",
        ];
        let mut rng = fastrand::Rng::with_seed(17);
        for _ in 0..20_000 {
            let p = Period::parse(periods[rng.usize(..periods.len())]).unwrap();
            // Instants from 1971 to 2100, to the millisecond.
            let now_ms = rng.i64(31_536_000_000..4_102_444_800_000);
            let now = DateTime::<Utc>::from_timestamp_millis(now_ms).unwrap();
            let (s, e, _) = Window::Calendar(p).current(0, now);
            let start = p.aligned_start(now);
            assert_eq!(s, start.timestamp_millis(), "{p:?} at {now}");
            assert_eq!(
                e,
                Some(p.end_of(start).timestamp_millis()),
                "{p:?} at {now}"
            );
            assert!(s <= now_ms && now_ms < e.unwrap());
            let (s2, _, fresh) = Window::Calendar(p).current(s, now);
            assert_eq!((s2, fresh), (s, false));
            // A rolling window started some time before now (or not yet started).
            let started = if rng.bool() {
                0
            } else {
                now_ms - rng.i64(0..2 * p.fixed_ms().unwrap())
            };
            let (s, e, fresh) = Window::Rolling(p).current(started, now);
            let end = (started > 0)
                .then(|| p.end_of(DateTime::<Utc>::from_timestamp_millis(started).unwrap()))
                .filter(|end| now < *end);
            match end {
                Some(end) => assert_eq!(
                    (s, e, fresh),
                    (started, Some(end.timestamp_millis()), false)
                ),
                None => assert_eq!(
                    (s, e, fresh),
                    (now_ms, Some(p.end_of(now).timestamp_millis()), true)
                ),
            }
        }
    }

    #[test]
    fn rolling_windows_start_at_first_use() {
        let w = Window::new(Some(Period::parse("1h").unwrap()), false);
        let now = t("2026-12-16T13:45:10Z");
        let (s, e, fresh) = w.current(0, now);
        assert!(fresh);
        assert_eq!(e.unwrap() - s, 3_600_000);
        let (s2, _, fresh) = w.current(s, now + Duration::minutes(59));
        assert!(!fresh);
        assert_eq!(s2, s);
        let (_, _, fresh) = w.current(s, now + Duration::minutes(61));
        assert!(fresh);
    }
}
