//! Channel patterns: `*` matches any run of characters (also none), `?` exactly one.
//!
//! Twitch logins are `[a-z0-9_]`, so patterns may contain only those characters and the
//! two wildcards. That makes common mistakes fail at `init` instead of silently never
//! matching: `"#chan"` (logins carry no `#`), `"[ab]c"` (no character classes here).

/// A validated, lower-cased channel pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// ASCII only (checked in [`Glob::new`]), so it can be matched byte by byte.
    pattern: String,
}

impl Glob {
    /// Validates a pattern. Upper-case letters are accepted and folded, since Twitch
    /// treats logins case-insensitively.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty channel pattern (use \"*\" for every channel)".into());
        }
        if let Some(bad) = pattern
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '*' | '?')))
        {
            let hint = if bad == '#' {
                " (write the login without '#')"
            } else {
                ""
            };
            return Err(format!(
                "channel pattern {pattern:?} contains {bad:?}; only letters, digits, '_' and the wildcards '*' and '?' are allowed{hint}"
            ));
        }
        Ok(Glob {
            pattern: pattern.to_ascii_lowercase(),
        })
    }

    /// Whether `channel` matches, ignoring ASCII case.
    ///
    /// The classic two-pointer wildcard match: on a mismatch, retry from the most recent
    /// `*` with it swallowing one more character. Linear in practice, no recursion (so no
    /// stack risk on hostile input), and `?` steps over a whole UTF-8 character.
    pub fn matches(&self, channel: &str) -> bool {
        let p = self.pattern.as_bytes();
        let (mut pi, mut ti) = (0usize, 0usize);
        // (pattern index just after the last `*`, text index that `*` has swallowed up to)
        let mut star: Option<(usize, usize)> = None;
        while let Some(c) = channel.get(ti..).and_then(|rest| rest.chars().next()) {
            let here = p.get(pi).copied();
            if here == Some(b'?') || (here.is_some_and(|b| b != b'*') && eq_fold(c, here)) {
                pi += 1;
                ti += c.len_utf8();
            } else if here == Some(b'*') {
                pi += 1;
                star = Some((pi, ti));
            } else if let Some((after_star, swallowed)) = star {
                // Let the `*` absorb one more character and retry from just after it.
                let step = channel
                    .get(swallowed..)
                    .and_then(|rest| rest.chars().next())
                    .map_or(1, char::len_utf8);
                star = Some((after_star, swallowed + step));
                pi = after_star;
                ti = swallowed + step;
            } else {
                return false;
            }
        }
        p.get(pi..)
            .is_some_and(|rest| rest.iter().all(|&b| b == b'*'))
    }

    /// The pattern as configured (lower-cased), for messages.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

fn eq_fold(c: char, pattern_byte: Option<u8>) -> bool {
    c.is_ascii() && pattern_byte == Some(c.to_ascii_lowercase() as u8)
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn m(p: &str, t: &str) -> bool {
        Glob::new(p).unwrap().matches(t)
    }

    #[test]
    fn wildcards() {
        assert!(m("*", "anything"));
        assert!(m("*", ""));
        assert!(m("xqc", "xqc"));
        assert!(m("XQC", "xqc"));
        assert!(m("xqc", "XQC"));
        assert!(!m("xqc", "xqcow"));
        assert!(m("xqc*", "xqcow"));
        assert!(m("*ow", "xqcow"));
        assert!(m("x*c*w", "xqcow"));
        assert!(m("x?c", "xqc"));
        assert!(!m("x?c", "xc"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("**a**", "a"));
        assert!(m("?", "é"));
        assert!(!m("a", "é"));
        assert!(m("*b", "éb"));
        assert!(!m("?", ""));
    }

    #[test]
    fn rejects_invalid() {
        assert!(Glob::new("").unwrap_err().contains("empty"));
        assert!(Glob::new("#chan").unwrap_err().contains("without '#'"));
        assert!(Glob::new("[ab]c").unwrap_err().contains("'['"));
        assert!(Glob::new("a b").unwrap_err().contains("' '"));
    }
}
