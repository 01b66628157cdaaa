//! The few Python `str`/`float` semantics VADER's behaviour depends on.
//!
//! The reference is Python, so "what is a word", "is this shouting" and "how is 0.0625
//! rounded" are whatever CPython says. Rust's closest built-ins differ in small ways
//! (`split_whitespace` ignores U+001C..U+001F, there is no `isupper` with Python's titlecase
//! rule, `f64::round` rounds ties away from zero), and each difference would change scores
//! for some input, so the exact semantics are spelled out here.
//!
//! Character properties come from Rust's Unicode tables, which are newer than the Unicode
//! 14 database of the CPython 3.11 the parity vectors were made with; the two only disagree
//! on characters assigned or re-categorised since (a few dozen, in rare scripts).

/// Python `str.isspace()`: Unicode `White_Space` plus the ASCII information separators
/// U+001C..U+001F, which CPython treats as whitespace (bidi class B/S) and Rust does not.
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python `str.split()` with no arguments: runs of whitespace separate words, and there are
/// no empty words.
pub(crate) fn split_words(text: &str) -> Words<'_> {
    Words { text, at: 0 }
}

/// Python's whitespace among ASCII bytes: `\t \n \v \f \r`, U+001C..U+001F and space.
const fn ascii_space_table() -> [bool; 128] {
    let mut t = [false; 128];
    let spaces = [9u8, 10, 11, 12, 13, 28, 29, 30, 31, 32];
    let mut i = 0;
    while i < spaces.len() {
        t[spaces[i] as usize] = true;
        i += 1;
    }
    t
}
static ASCII_SPACE: [bool; 128] = ascii_space_table();

/// The iterator of [`split_words`]. Chat is mostly ASCII, so bytes below 0x80 are
/// classified with a table and only other characters are decoded: `str::split` with a
/// `char` predicate decodes every character, which showed up as a tenth of scoring time.
pub(crate) struct Words<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Words<'a> {
    /// The character at byte `i` (a character boundary below the text's length).
    fn char_at(&self, i: usize) -> char {
        self.text
            .get(i..)
            .and_then(|t| t.chars().next())
            .unwrap_or(' ')
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let mut i = self.at;
        // Skip whitespace.
        while let Some(&b) = bytes.get(i) {
            if b < 0x80 {
                if !ASCII_SPACE[usize::from(b)] {
                    break;
                }
                i += 1;
            } else {
                let c = self.char_at(i);
                if !is_space(c) {
                    break;
                }
                i += c.len_utf8();
            }
        }
        if i >= bytes.len() {
            self.at = bytes.len();
            return None;
        }
        let start = i;
        while let Some(&b) = bytes.get(i) {
            if b < 0x80 {
                if ASCII_SPACE[usize::from(b)] {
                    break;
                }
                i += 1;
            } else {
                let c = self.char_at(i);
                if is_space(c) {
                    break;
                }
                i += c.len_utf8();
            }
        }
        self.at = i;
        self.text.get(start..i)
    }
}

/// The reference's `_strip_punc_if_word`: strip ASCII punctuation (`string.punctuation`,
/// which is exactly Rust's `is_ascii_punctuation` set) from both ends, unless that leaves
/// two characters or fewer, in which case the token was probably an emoticon such as `:)`
/// or `<3` and is kept whole.
pub(crate) fn strip_punc_if_word(token: &str) -> &str {
    // Punctuation is ASCII, so trimming bytes is trimming characters, and the cut points
    // (next to an ASCII byte or at an end) are always character boundaries.
    let bytes = token.as_bytes();
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_punctuation())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_punctuation())
        .map_or(start, |i| i + 1);
    let stripped = token.get(start..end).unwrap_or("");
    // "Two or fewer characters" counts code points, as Python's len() does; at most 8
    // bytes can hold two of them.
    let short = stripped.len() <= 2 || (stripped.len() <= 8 && stripped.chars().nth(2).is_none());
    if short { token } else { stripped }
}

/// Appends Python's `word.lower()` to `out`.
pub(crate) fn push_lower(word: &str, out: &mut String) {
    if word.is_ascii() {
        let start = out.len();
        out.push_str(word);
        if let Some(tail) = out.get_mut(start..) {
            tail.make_ascii_lowercase();
        }
    } else if word.contains('Σ') {
        // Full case mapping with the final-sigma rule, like CPython's str.lower().
        out.push_str(&word.to_lowercase());
    } else {
        // Without a capital sigma, lowercasing is per character (the one context-dependent
        // rule is the final sigma), so no temporary string is needed.
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
}

/// `a == b` for short byte strings without a `memcmp` call (one in a WASM guest is a
/// function call and a byte loop): equal lengths, then overlapping fixed-size loads.
#[inline]
pub(crate) fn short_eq(a: &[u8], b: &[u8]) -> bool {
    fn word<const N: usize>(s: &[u8], at: usize) -> Option<[u8; N]> {
        s.get(at..at + N).and_then(|w| w.try_into().ok())
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n > 32 {
        return a == b;
    }
    if n >= 8 {
        let mut at = 0;
        while at + 8 < n {
            if word::<8>(a, at) != word::<8>(b, at) {
                return false;
            }
            at += 8;
        }
        word::<8>(a, n - 8) == word::<8>(b, n - 8)
    } else if n >= 4 {
        word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4)
    } else if n >= 2 {
        word::<2>(a, 0) == word::<2>(b, 0) && word::<2>(a, n - 2) == word::<2>(b, n - 2)
    } else {
        a.first() == b.first()
    }
}

/// Python `str.isupper()`: at least one cased character, and none lowercase or titlecase.
pub(crate) fn is_upper(word: &str) -> bool {
    let mut cased = false;
    for c in word.chars() {
        if c.is_ascii() {
            if c.is_ascii_lowercase() {
                return false;
            }
            cased |= c.is_ascii_uppercase();
        } else if c.is_lowercase() || is_titlecase(c) {
            return false;
        } else if c.is_uppercase() {
            cased = true;
        }
    }
    cased
}

/// Unicode general category Lt (titlecase letters such as `ǅ`), which Rust has no predicate
/// for. The set is tiny and has not changed since Unicode 3.x.
fn is_titlecase(c: char) -> bool {
    matches!(
        c,
        '\u{01C5}'
            | '\u{01C8}'
            | '\u{01CB}'
            | '\u{01F2}'
            | '\u{1F88}'..='\u{1F8F}'
            | '\u{1F98}'..='\u{1F9F}'
            | '\u{1FA8}'..='\u{1FAF}'
            | '\u{1FBC}'
            | '\u{1FCC}'
            | '\u{1FFC}'
    )
}

/// Python `round(x, digits)` for a float: the decimal nearest to the exact binary value of
/// `x`, ties to even, converted back to the nearest float.
///
/// Fast path: scale, round, unscale. `k / 10^d` with an exact integer `k` is correctly
/// rounded by IEEE division, so the only way this can differ from Python is choosing the
/// wrong `k`, which needs the scaled value to sit (within its own rounding error) on a .5
/// tie. Those rare cases go through Rust's formatter, which rounds the exact value ties to
/// even just as CPython's dtoa does.
#[inline]
pub(crate) fn round(x: f64, digits: usize) -> f64 {
    let scale = match digits {
        3 => 1e3,
        4 => 1e4,
        _ => 10f64.powi(i32::try_from(digits).unwrap_or(i32::MAX)),
    };
    let y = x * scale;
    if y.is_finite() && y.abs() < 1e15 && (y.abs().fract() - 0.5).abs() > 1e-6 {
        // Not on a tie, so any round-to-nearest is right; ties-to-even is one instruction
        // in WASM (`f64.nearest`) where `round` (ties away from zero) is a library call.
        return y.round_ties_even() / scale;
    }
    format!("{x:.digits$}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_matches_python_whitespace() {
        // Every whitespace character Python knows, ASCII or not, between words.
        let spaces: String = (0..=0x10ffffu32)
            .filter_map(char::from_u32)
            .filter(|&c| is_space(c))
            .collect();
        let text: String = spaces.chars().map(|c| format!("w{c}")).collect();
        assert_eq!(split_words(&text).count(), spaces.chars().count());
        assert!(split_words(&text).all(|w| w == "w"));
        assert_eq!(
            split_words(" é\u{3000}日本  x\u{85}").collect::<Vec<_>>(),
            ["é", "日本", "x"]
        );
        let words: Vec<&str> = split_words("a\u{1c}b\u{0b}c\u{a0}d\u{3000}e  \u{200b}f").collect();
        // U+200B (zero width space) is not whitespace in Python either.
        assert_eq!(words, ["a", "b", "c", "d", "e", "\u{200b}f"]);
        assert_eq!(split_words("   ").count(), 0);
    }

    #[test]
    fn strip_punc_keeps_short_emoticons() {
        assert_eq!(strip_punc_if_word(":)"), ":)");
        assert_eq!(strip_punc_if_word("!!!"), "!!!");
        assert_eq!(strip_punc_if_word("a!"), "a!");
        assert_eq!(strip_punc_if_word("ok!"), "ok!");
        assert_eq!(strip_punc_if_word("wow!!"), "wow");
        assert_eq!(strip_punc_if_word("'don't'"), "don't");
        assert_eq!(strip_punc_if_word("(héé)"), "héé");
        assert_eq!(strip_punc_if_word("«wow»"), "«wow»");
    }

    #[test]
    fn short_eq_is_eq() {
        let base: Vec<u8> = (0u8..40).collect();
        for n in 0..=40 {
            let a = &base[..n];
            assert!(short_eq(a, a));
            for i in 0..n {
                let mut b = a.to_vec();
                b[i] ^= 1;
                assert!(!short_eq(a, &b), "{n} {i}");
            }
            assert!(!short_eq(a, &base[..n.saturating_sub(1)]) || n == 0);
        }
    }

    #[test]
    fn isupper_follows_python() {
        assert!(is_upper("GOOD"));
        assert!(is_upper("A1!"));
        assert!(!is_upper("123"));
        assert!(!is_upper(""));
        assert!(!is_upper("GOOd"));
        assert!(is_upper("ÉTÉ"));
        assert!(!is_upper("Aǅ"));
        assert!(is_upper("Ⓐ"));
    }

    #[test]
    fn lower_follows_python() {
        let mut s = String::new();
        push_lower("HeLLo", &mut s);
        push_lower("\u{212a}ILL", &mut s); // KELVIN SIGN lowercases to ASCII k
        assert_eq!(s, "hellokill");
    }

    #[test]
    fn round_is_bankers_on_the_exact_value() {
        assert_eq!(round(0.0625, 3), 0.062);
        assert_eq!(round(0.1875, 3), 0.188);
        assert_eq!(round(2.675, 2), 2.67);
        assert_eq!(round(0.123_45, 4), 0.1235); // 0.12345 is stored just above the tie
        assert_eq!(round(0.4404, 4), 0.4404);
        assert_eq!(round(-0.000_4, 3), 0.0);
        assert!(round(-0.000_4, 3).is_sign_negative());
        assert_eq!(round(1.0, 3), 1.0);
        assert!(round(f64::NAN, 3).is_nan());
    }
}
