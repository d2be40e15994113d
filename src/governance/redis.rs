//! The Redis store (`[governance] store = "redis"`): counters, keys and their owners shared by
//! several gateway instances.
//!
//! Each reservation and each settlement is one Lua script over every bucket of the request
//! (all-or-nothing, atomic in Redis), with the server's clock for windows that start at first use.
//! Entities made through the admin API live in the hash `sy:gov:entities`; every change bumps
//! `sy:gov:version`, which each instance polls twice a second to reload.
//!
//! A reservation is a lease: its amounts are kept in `sy:gov:lease:<id>` and its expiry in the
//! sorted set `sy:gov:leases`. Settling removes the lease; a lease never settled (its instance was
//! killed mid-request) is given back by the next reservation of any instance once it expires
//! (`[governance] reservation_ttl_seconds`), so a crash cannot hold a budget forever. A settlement
//! that finds its lease already given back charges what was used without releasing twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;

use super::counters::{Charge, Kind, Refusal, Snapshot};
use super::period::Window;

/// Hash of API-made entities: name (`key/ana`) -> JSON.
pub const ENTITIES: &str = "sy:gov:entities";
/// Bumped on every entity change.
pub const VERSION: &str = "sy:gov:version";

/// What both scripts start with: the server's clock, number formatting, and reading a bucket
/// moved to its current window (`wmode` `c`: calendar window starting at `warg`; `r`: `warg` ms
/// from first use; `n`: never resets).
const PRELUDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function fmt(x) return string.format('%.17g', x) end
local function bucket(key, wmode, warg)
  local h = redis.call('HMGET', key, 's', 'u', 'r')
  local s, u, r = tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0
  if wmode == 'c' then
    if s ~= warg then s = warg; u = 0 end
  elseif wmode == 'r' then
    if s == 0 or now >= s + warg then s = now; u = 0 end
  end
  return s, u, r
end
"#;

const RESERVE: &str = r#"
local n = #KEYS
local lease, lease_ttl = ARGV[n * 6 + 1], tonumber(ARGV[n * 6 + 2])
-- Give back the reservations of leases that expired unsettled (a few per call).
local dead = redis.call('ZRANGEBYSCORE', 'sy:gov:leases', '-inf', now, 'LIMIT', 0, 32)
for _, id in ipairs(dead) do
  local held = redis.call('HGETALL', 'sy:gov:lease:' .. id)
  for j = 1, #held, 2 do
    if redis.call('EXISTS', held[j]) == 1 then
      local r = (tonumber(redis.call('HGET', held[j], 'r')) or 0) - tonumber(held[j + 1])
      if r < 1e-9 then r = 0 end
      redis.call('HSET', held[j], 'r', fmt(r))
    end
  end
  redis.call('DEL', 'sy:gov:lease:' .. id)
  redis.call('ZREM', 'sy:gov:leases', id)
end
local st = {}
for i = 1, #KEYS do
  local b = (i - 1) * 6
  local kind, limit, wmode = ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3]
  local warg, amount = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local s, u, r = bucket(KEYS[i], wmode, warg)
  local eps = 1e-9
  local fits
  if kind == 'b' or kind == 't' then
    fits = (u + r + amount <= limit + eps) and (amount > 0 or u < limit)
  elseif kind == 'q' then
    fits = u + amount <= limit + eps
  else
    fits = r + amount <= limit + eps
  end
  if not fits then
    return {'refused', tostring(i), fmt(u), fmt(r), fmt(s), fmt(now)}
  end
  st[i] = {s, u, r}
end
local out = {'ok', fmt(now)}
for i = 1, #KEYS do
  local b = (i - 1) * 6
  local kind, amount, ttl = ARGV[b + 1], tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])
  local s, u, r = st[i][1], st[i][2], st[i][3]
  if kind == 'q' then
    u = u + amount
  else
    r = r + amount
    if lease ~= '' then redis.call('HINCRBYFLOAT', 'sy:gov:lease:' .. lease, KEYS[i], amount) end
  end
  redis.call('HSET', KEYS[i], 's', fmt(s), 'u', fmt(u), 'r', fmt(r))
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
  table.insert(out, fmt(u))
  table.insert(out, fmt(r))
  table.insert(out, fmt(s))
end
if lease ~= '' and redis.call('EXISTS', 'sy:gov:lease:' .. lease) == 1 then
  redis.call('ZADD', 'sy:gov:leases', now + lease_ttl, lease)
  redis.call('PEXPIRE', 'sy:gov:lease:' .. lease, lease_ttl + 86400000)
end
return out
"#;

const SETTLE: &str = r#"
local lease = ARGV[#KEYS * 6 + 1]
-- Released only while the lease is held: an expired lease was given back already.
local held = true
if lease ~= '' then
  held = redis.call('ZREM', 'sy:gov:leases', lease) == 1
  redis.call('DEL', 'sy:gov:lease:' .. lease)
end
for i = 1, #KEYS do
  local b = (i - 1) * 6
  local kind, wmode, warg = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3])
  local reserved, actual, ttl = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])
  local s, u, r = bucket(KEYS[i], wmode, warg)
  if kind ~= 'q' and held then
    r = r - reserved
    if r < 1e-9 then r = 0 end
  end
  if kind == 'b' or kind == 't' then u = u + actual end
  redis.call('HSET', KEYS[i], 's', fmt(s), 'u', fmt(u), 'r', fmt(r))
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 'ok'
"#;

/// Counters in Redis.
pub struct RedisCounters {
    conn: ConnectionManager,
    /// How long an unsettled reservation is held.
    lease_ttl: Duration,
    reserve: redis::Script,
    settle: redis::Script,
    tasks: tokio_util::task::TaskTracker,
}

/// Redis could not be reached or answered badly.
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis: {0}")]
pub struct Unreachable(pub String);

fn kind_code(k: Kind) -> &'static str {
    match k {
        Kind::Budget => "b",
        Kind::Tokens => "t",
        Kind::Requests | Kind::ToolCalls => "q",
        Kind::Concurrent => "c",
    }
}

/// (mode, argument, ttl ms) of a window: calendar windows by their start (this instance's clock,
/// UTC boundaries), windows from first use by their length (the server's clock).
fn window_args(w: Window, now: DateTime<Utc>) -> (&'static str, i64, i64) {
    const DAY: i64 = 86_400_000;
    match w {
        Window::Never => ("n", 0, 0),
        Window::Calendar(p) => {
            let start = p.aligned_start_ms(now.timestamp_millis());
            let len = p.end_of_ms(start) - start;
            ("c", start, 2 * len + DAY)
        }
        Window::Rolling(p) => {
            let now = now.timestamp_millis();
            let len = p.end_of_ms(now) - now;
            ("r", len, 2 * len + DAY)
        }
    }
}

/// A Redis URL without its password (for messages).
pub fn safe_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            format!(
                "{}://***@{}",
                url.get(..s).unwrap_or_default(),
                url.get(at + 1..).unwrap_or_default()
            )
        }
        _ => url.to_owned(),
    }
}

fn key(bucket: &str) -> String {
    format!("sy:{bucket}")
}

fn num(v: Option<&String>) -> f64 {
    v.and_then(|s| s.parse().ok()).unwrap_or(0.0)
}

/// When a window that starts at `start_ms` ends.
fn end_of(w: Window, start_ms: i64) -> Option<i64> {
    DateTime::<Utc>::from_timestamp_millis(start_ms)?;
    match w {
        Window::Never => None,
        Window::Calendar(p) | Window::Rolling(p) => Some(p.end_of_ms(start_ms)),
    }
}

impl RedisCounters {
    /// Connects (a multiplexed connection that reconnects by itself; calls time out after 2 s).
    pub async fn connect(
        url: &str,
        lease_ttl: Duration,
        tasks: tokio_util::task::TaskTracker,
    ) -> Result<(Self, ConnectionManager), Unreachable> {
        let client = redis::Client::open(url).map_err(|e| Unreachable(e.to_string()))?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, cfg)
            .await
            .map_err(|e| Unreachable(e.to_string()))?;
        Ok((
            Self {
                conn: conn.clone(),
                lease_ttl,
                reserve: redis::Script::new(&format!("{PRELUDE}{RESERVE}")),
                settle: redis::Script::new(&format!("{PRELUDE}{SETTLE}")),
                tasks,
            },
            conn,
        ))
    }

    /// Whether Redis answers a `PING` now.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }

    /// Reserves every charge or none (one script), held under `lease` (empty: nothing to give
    /// back, request and tool-call counts only).
    pub async fn reserve(
        &self,
        charges: &[Charge],
        lease: &str,
    ) -> Result<Result<Vec<Snapshot>, Refusal>, Unreachable> {
        if charges.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let now = Utc::now();
        let mut inv = self.reserve.prepare_invoke();
        for c in charges {
            let (mode, arg, ttl) = window_args(c.window, now);
            inv.key(key(&c.bucket))
                .arg(kind_code(c.kind))
                .arg(c.limit)
                .arg(mode)
                .arg(arg)
                .arg(c.amount)
                .arg(ttl);
        }
        inv.arg(lease).arg(self.lease_ttl.as_millis() as u64);
        let mut conn = self.conn.clone();
        let out: Vec<String> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Unreachable(e.to_string()))?;
        if out.first().map(String::as_str) == Some("refused") {
            let index = out
                .get(1)
                .and_then(|i| i.parse::<usize>().ok())
                .unwrap_or(1)
                .saturating_sub(1);
            let start = num(out.get(4)) as i64;
            let window = charges.get(index).map_or(Window::Never, |c| c.window);
            return Ok(Err(Refusal {
                index,
                used: num(out.get(2)),
                reserved: num(out.get(3)),
                resets_at_ms: end_of(window, start),
            }));
        }
        let snaps = charges
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let at = 2 + i * 3;
                Snapshot {
                    used: num(out.get(at)),
                    reserved: num(out.get(at + 1)),
                    resets_at_ms: end_of(c.window, num(out.get(at + 2)) as i64),
                }
            })
            .collect();
        Ok(Ok(snaps))
    }

    /// Settles in the background (a tracked task: shutdown waits for it).
    pub fn settle(&self, charges: Vec<Charge>, lease: &str, usd: f64, tokens: f64) {
        if charges.is_empty() {
            return;
        }
        let now = Utc::now();
        let mut conn = self.conn.clone();
        // The arguments are built now; the call is made in a tracked task.
        let script = self.settle.clone();
        let keys: Vec<String> = charges.iter().map(|c| key(&c.bucket)).collect();
        let mut args: Vec<String> = charges
            .iter()
            .flat_map(|c| {
                let (mode, arg, ttl) = window_args(c.window, now);
                let actual = match c.kind {
                    Kind::Budget => usd,
                    Kind::Tokens => tokens,
                    _ => 0.0,
                };
                [
                    kind_code(c.kind).to_owned(),
                    mode.to_owned(),
                    arg.to_string(),
                    c.amount.to_string(),
                    actual.to_string(),
                    ttl.to_string(),
                ]
            })
            .collect();
        args.push(lease.to_owned());
        self.tasks.spawn(async move {
            let mut inv = script.prepare_invoke();
            for k in &keys {
                inv.key(k);
            }
            for a in &args {
                inv.arg(a);
            }
            let r: Result<String, _> = inv.invoke_async(&mut conn).await;
            if let Err(e) = r {
                tracing::error!(error = %e, "a settlement could not be written to redis; the reservation stays until its window resets");
            }
        });
    }

    /// A bucket's state now.
    pub async fn snapshot(&self, bucket: &str, window: Window) -> Result<Snapshot, Unreachable> {
        let mut conn = self.conn.clone();
        let v: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(key(bucket))
            .arg("s")
            .arg("u")
            .arg("r")
            .query_async(&mut conn)
            .await
            .map_err(|e| Unreachable(e.to_string()))?;
        let get = |i: usize| v.get(i).cloned().flatten();
        let start = num(get(0).as_ref()) as i64;
        let (mut used, reserved) = (num(get(1).as_ref()), num(get(2).as_ref()));
        let now = Utc::now();
        let (cur, end, fresh) = window.current(start, now);
        if fresh || (matches!(window, Window::Calendar(_)) && cur != start) {
            used = 0.0;
        }
        Ok(Snapshot {
            used,
            reserved,
            resets_at_ms: end,
        })
    }

    /// Forgets a deleted entity's buckets (SCAN, so a large Redis is not blocked).
    pub async fn forget(&self, prefix: &str) -> Result<(), Unreachable> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", key(prefix));
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| Unreachable(e.to_string()))?;
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(keys)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| Unreachable(e.to_string()))?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}
