//! Budget periods and their windows: `N` minutes, hours, days, weeks, months or years, either
//! running from the first use after the last reset, or aligned to UTC calendar boundaries.

use chrono::{DateTime, Datelike, Months, TimeZone, Utc};

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

    /// The end (ms) of the window that starts at `start_ms`. Minutes to weeks are whole
    /// milliseconds; months and years go through the calendar.
    pub fn end_of_ms(self, start_ms: i64) -> i64 {
        if let Some(len) = self.fixed_ms() {
            return start_ms.saturating_add(len);
        }
        let Some(start) = DateTime::<Utc>::from_timestamp_millis(start_ms) else {
            return start_ms;
        };
        let months = match self.unit {
            Unit::Month => self.n,
            _ => self.n.saturating_mul(12),
        };
        start
            .checked_add_months(Months::new(months))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
            .timestamp_millis()
    }

    /// The start (ms) of the calendar-aligned window holding `now_ms` (UTC boundaries; weeks
    /// start on Monday).
    pub fn aligned_start_ms(self, now_ms: i64) -> i64 {
        if let Some(len) = self.fixed_ms() {
            // Minutes, hours and days align to the epoch, weeks to Monday 1970-01-05.
            let origin = if self.unit == Unit::Week {
                MONDAY_MS
            } else {
                0
            };
            return now_ms - (now_ms - origin).rem_euclid(len);
        }
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        let now = DateTime::<Utc>::from_timestamp_millis(now_ms).unwrap_or(epoch);
        let n = i64::from(self.n);
        let per = if self.unit == Unit::Month { n } else { 12 * n };
        let months = i64::from(now.year() - 1970) * 12 + i64::from(now.month0());
        let start = months - months.rem_euclid(per);
        let (y, m) = (1970 + start.div_euclid(12), start.rem_euclid(12) + 1);
        Utc.with_ymd_and_hms(y as i32, m as u32, 1, 0, 0, 0)
            .single()
            .unwrap_or(epoch)
            .timestamp_millis()
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
        let now_ms = now.timestamp_millis();
        match self {
            Self::Never => (start_ms, None, false),
            Self::Calendar(p) => {
                let s = p.aligned_start_ms(now_ms);
                (s, Some(p.end_of_ms(s)), s != start_ms)
            }
            Self::Rolling(p) => {
                let end = (start_ms > 0).then(|| p.end_of_ms(start_ms));
                match end.filter(|e| now_ms < *e) {
                    Some(end) => (start_ms, Some(end), false),
                    None => (now_ms, Some(p.end_of_ms(now_ms)), true),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

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
        let now = t("2026-12-16T13:45:10Z").timestamp_millis();
        let p = |s| Period::parse(s).unwrap();
        let ms = |s| t(s).timestamp_millis();
        assert_eq!(p("1d").aligned_start_ms(now), ms("2026-12-16T00:00:00Z"));
        assert_eq!(p("1h").aligned_start_ms(now), ms("2026-12-16T13:00:00Z"));
        assert_eq!(p("1w").aligned_start_ms(now), ms("2026-12-14T00:00:00Z"));
        assert_eq!(p("1M").aligned_start_ms(now), ms("2026-12-01T00:00:00Z"));
        assert_eq!(
            p("1M").end_of_ms(ms("2026-12-01T00:00:00Z")),
            ms("2027-01-01T00:00:00Z")
        );
        assert_eq!(p("1y").aligned_start_ms(now), ms("2026-01-01T00:00:00Z"));
    }

    /// The calendar's answer for a fixed-length period, with chrono's date arithmetic (how the
    /// windows were worked out before they were whole milliseconds): (start, end).
    fn by_the_calendar(p: Period, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let len = match p.unit {
            Unit::Minute => Duration::minutes(1),
            Unit::Hour => Duration::hours(1),
            Unit::Day => Duration::days(1),
            Unit::Week => Duration::weeks(1),
            Unit::Month | Unit::Year => unreachable!("not a fixed length"),
        } * i32::try_from(p.n).unwrap();
        let origin = match p.unit {
            Unit::Week => Utc.with_ymd_and_hms(1970, 1, 5, 0, 0, 0).single().unwrap(),
            _ => DateTime::<Utc>::UNIX_EPOCH,
        };
        let step = len.num_seconds();
        let secs = (now - origin).num_seconds();
        let start = origin + Duration::seconds(secs - secs.rem_euclid(step));
        (start, start + len)
    }

    /// The windows of fixed-length periods, worked out in milliseconds, are the ones the
    /// calendar gives, across many instants, periods and starts.
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
            let (start, end) = by_the_calendar(p, now);
            assert_eq!(s, start.timestamp_millis(), "{p:?} at {now}");
            assert_eq!(e, Some(end.timestamp_millis()), "{p:?} at {now}");
            assert!(s <= now_ms && now_ms < e.unwrap());
            let (s2, _, fresh) = Window::Calendar(p).current(s, now);
            assert_eq!((s2, fresh), (s, false));
            // A rolling window started some time before now (or not yet started).
            let started = if rng.bool() {
                0
            } else {
                now_ms - rng.i64(0..2 * p.fixed_ms().unwrap())
            };
            let len = (by_the_calendar(p, now).1 - by_the_calendar(p, now).0).num_milliseconds();
            let (s, e, fresh) = Window::Rolling(p).current(started, now);
            if started > 0 && now_ms < started + len {
                assert_eq!((s, e, fresh), (started, Some(started + len), false));
            } else {
                assert_eq!((s, e, fresh), (now_ms, Some(now_ms + len), true));
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
