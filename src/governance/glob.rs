//! Model and tool globs: `*` matches any run of characters (`/` included), `?` one character.

/// Characters a glob may hold besides `*` and `?`.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '@' | '+')
}

/// Checks that a glob can be used; the error says why not.
pub fn check(glob: &str) -> Result<(), String> {
    if glob.is_empty() || glob.len() > 200 {
        return Err("a glob must be 1 to 200 characters".into());
    }
    match glob.chars().find(|c| !plain(*c) && *c != '*' && *c != '?') {
        Some(c) => Err(format!(
            "`{glob}` does not parse as a glob: `{c}` is not allowed (use letters, digits, - _ . / : @ +, and * or ?)"
        )),
        None => Ok(()),
    }
}

/// Whether `text` matches `glob` (iterative, with backtracking on the last `*`). Runs on the
/// bytes when both are ASCII (model and tool names nearly always are: no allocation), on
/// characters otherwise, so `?` is always one character.
pub fn matches(glob: &str, text: &str) -> bool {
    if glob.is_ascii() && text.is_ascii() {
        return matches_in(glob.as_bytes(), text.as_bytes(), b'*', b'?');
    }
    let g: Vec<char> = glob.chars().collect();
    let t: Vec<char> = text.chars().collect();
    matches_in(&g, &t, '*', '?')
}

fn matches_in<C: Copy + PartialEq>(g: &[C], t: &[C], many: C, one: C) -> bool {
    let (mut gi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match g.get(gi) {
            Some(c) if *c == many => {
                star = Some((gi, ti));
                gi += 1;
            }
            Some(c) if *c == one || Some(c) == t.get(ti) => {
                gi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sg, st)) => {
                    gi = sg + 1;
                    ti = st + 1;
                    star = Some((sg, st + 1));
                }
                None => return false,
            },
        }
    }
    g.get(gi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == many))
}

/// Whether any glob matches.
pub fn any(globs: &[String], text: &str) -> bool {
    globs.iter().any(|g| matches(g, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("openai/*", "openai/gpt-4o"));
        assert!(matches("openai/o1*", "openai/o1-mini"));
        assert!(!matches("openai/o1*", "openai/gpt-4o"));
        assert!(matches("*", "anything/at/all"));
        assert!(matches("calc__*", "calc__add"));
        assert!(!matches("calc__*", "kv__get"));
        assert!(matches("gpt-?o", "gpt-4o"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("smart", "smart"));
        assert!(!matches("smart", "smarter"));
        // Text beyond ASCII: `?` is one character, not one byte.
        assert!(matches("caf?", "café"));
        assert!(!matches("caf??", "café"));
        assert!(matches("*/é*", "openai/élan-1"));
        assert!(!matches("openai/*", "anthropic/é"));
        assert!(check("openai/[x").is_err());
        assert!(check("").is_err());
        assert!(check("anthropic/claude-*").is_ok());
    }
}
