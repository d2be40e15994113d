//! Canonical OpenAI-shaped chat types: the only request/response shape the core speaks. The plain
//! types live in the `switchyard-plugin` crate (plugins see exactly what the core sees); the
//! stream type and the clocks are the gateway's.

mod stream;

pub use stream::{ChatStream, StreamCollector, StreamError, collect_stream};

pub use switchyard_plugin::chat::*;

/// Unix time in seconds, for `created`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix time in milliseconds, for logs and series.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A new id with this prefix: the creation time (hex milliseconds, so stored responses sort by
/// age) and 128 random bits.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:012x}{:032x}", unix_now_ms(), fastrand::u128(..))
}

/// The creation time (unix ms) of an id made by `new_id`.
pub fn id_time_ms(id: &str) -> Option<u64> {
    let hex = id.split_once('_')?.1.get(..12)?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests;
