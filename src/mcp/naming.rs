//! Tool names as models see them: `server__tool`, within `^[a-zA-Z0-9_-]{1,64}$`.
//!
//! Characters outside that set become `_`; a name that would be longer than 64 characters keeps
//! as much of the tool name as fits and ends in `_` plus 8 hex digits of the SHA-256 of the
//! original tool name, so it is stable across restarts and machines. The original name is kept
//! for the call. Two tools of one server that end up with the same name are a registration error.

use sha2::{Digest, Sha256};

/// Longest function name the providers accept.
pub const MAX_NAME: usize = 64;
/// Between the server and the tool.
pub const SEPARATOR: &str = "__";

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The name a model calls `tool` of `server` by. `server` must already be a valid server name
/// (at most 32 characters of the allowed set, see `config::mcp::check_server_name`).
pub fn exposed(server: &str, tool: &str) -> String {
    let clean: String = tool
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    let full = format!("{server}{SEPARATOR}{clean}");
    if full.len() <= MAX_NAME && !clean.is_empty() {
        return full;
    }
    let digest = Sha256::digest(tool.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let room = MAX_NAME.saturating_sub(server.len() + SEPARATOR.len() + 1 + hash.len());
    // `clean` is ASCII, so any byte index is a char boundary.
    let kept = clean.get(..room.min(clean.len())).unwrap_or_default();
    format!("{server}{SEPARATOR}{kept}_{hash}")
}

/// Whether `name` is a valid function name for every provider.
pub fn is_valid(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && name.chars().all(allowed)
}

/// The server part of an exposed name.
pub fn server_of(exposed: &str) -> Option<&str> {
    exposed.split_once(SEPARATOR).map(|(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_prefixed_as_they_are() {
        assert_eq!(exposed("calc", "add"), "calc__add");
        assert_eq!(exposed("my-srv", "get_weather"), "my-srv__get_weather");
        assert_eq!(server_of("my-srv__get_weather"), Some("my-srv"));
    }

    #[test]
    fn bad_characters_become_underscores() {
        assert_eq!(exposed("fs", "read.file"), "fs__read_file");
        assert_eq!(exposed("fs", "dir/list"), "fs__dir_list");
        assert!(is_valid(&exposed("fs", "ünïcode tool")));
    }

    #[test]
    fn long_names_are_shortened_with_a_stable_hash() {
        let server = "a-rather-long-server-name-x";
        let tool = "an_extremely_long_tool_name_that_goes_on_and_on_and_on";
        let name = exposed(server, tool);
        assert_eq!(name.len(), MAX_NAME);
        assert!(is_valid(&name));
        assert!(name.starts_with("a-rather-long-server-name-x__an_extremely"));
        // Stable: the same input gives the same name; a different tool a different one.
        assert_eq!(name, exposed(server, tool));
        let other = exposed(
            server,
            "an_extremely_long_tool_name_that_goes_on_and_on_and_ON",
        );
        assert_ne!(name, other);
        assert_eq!(name.len(), other.len());
        // The hash is the first 4 bytes of SHA-256 of the original tool name.
        let digest = Sha256::digest(tool.as_bytes());
        let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        assert!(name.ends_with(&format!("_{hex}")), "{name}");
    }

    #[test]
    fn every_name_is_valid() {
        for (s, t) in [
            ("x", ""),
            ("x", "----"),
            ("s2345678901234567890123456789012", "t".repeat(200).as_str()),
            ("calc", "a b c"),
        ] {
            let n = exposed(s, t);
            assert!(is_valid(&n), "{n}");
            assert_eq!(server_of(&n), Some(s));
        }
    }
}
