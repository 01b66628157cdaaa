//! Twitch-specific preprocessing done before VADER sees a message.

use crate::pystr;

/// Writes `text` into `out` with the emotes at `ranges` cut out, keeping those for which
/// `keep(name)` is true; returns false (and leaves `out` alone) when nothing was cut.
///
/// `ranges` are Twitch's inclusive *character* (code point) positions. They come from the
/// network, so they are treated as hints: ranges that are reversed, run past the end of the
/// text or overlap an earlier range are ignored, never trusted. A cut emote is replaced by
/// one space so that the words on either side can never fuse into a new token.
pub(crate) fn cut_emotes(
    text: &str,
    ranges: &mut Vec<(usize, usize)>,
    keep: impl Fn(&str) -> bool,
    out: &mut String,
) -> bool {
    ranges.retain(|(start, end)| start <= end);
    if ranges.is_empty() {
        return false;
    }
    ranges.sort_unstable();

    // Byte offset of every code point, plus the end of the text, visited once in order:
    // the ranges are sorted, so each lookup only moves forward.
    let mut offsets = text
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(text.len()));
    let mut next_char = 0usize;
    let mut last = (usize::MAX, 0usize); // (char index, byte offset) of the latest lookup
    // In ASCII text (most chat) a character position is its byte offset.
    let ascii = text.is_ascii();
    let mut byte_at = |c: usize| -> Option<usize> {
        if ascii {
            return (c <= text.len()).then_some(c);
        }
        if last.0 == c {
            return Some(last.1);
        }
        let b = offsets.nth(c.checked_sub(next_char)?)?;
        next_char = c + 1;
        last = (c, b);
        Some(b)
    };

    let mut copied = 0usize; // bytes of `text` already handled
    let mut cut_any = false;
    let mut end_char = 0usize; // first character not covered by an accepted range
    for &(start, end) in ranges.iter() {
        if start < end_char {
            continue; // overlaps the previous emote
        }
        let (Some(from), Some(to)) = (byte_at(start), end.checked_add(1).and_then(&mut byte_at))
        else {
            break; // runs past the end of the text; later ranges start even later
        };
        end_char = end + 1;
        let name = text.get(from..to).unwrap_or("");
        if keep(name) {
            continue;
        }
        if !cut_any {
            out.clear();
            out.reserve(text.len());
            cut_any = true;
        }
        out.push_str(text.get(copied..from).unwrap_or(""));
        out.push(' ');
        copied = to;
    }
    if cut_any {
        out.push_str(text.get(copied..).unwrap_or(""));
    }
    cut_any
}

/// More repetitions than this make a message spam.
pub(crate) const MAX_REPEATS: usize = 10;

/// A message that is one token repeated more than ten times ("LUL LUL LUL ...") is scored
/// as that token alone: otherwise spam saturates `compound` at ±1 and drowns the real
/// messages in any average. Tokens are compared exactly, after splitting on whitespace.
pub(crate) fn spam_token(text: &str) -> Option<&str> {
    let mut words = pystr::split_words(text);
    let first = words.next()?;
    // More than ten copies and the whitespace between them: shorter texts (nearly all)
    // cannot be spam, so their other tokens need not be split here. Saturating: on wasm32
    // the product overflows for a token of a few hundred MB, which would wrap to a small
    // bound (and panic in debug builds).
    let min_len = (MAX_REPEATS + 1)
        .saturating_mul(first.len())
        .saturating_add(MAX_REPEATS);
    if text.len() < min_len {
        return None;
    }
    let mut count = 1usize;
    for w in words {
        if !pystr::short_eq(w.as_bytes(), first.as_bytes()) {
            return None;
        }
        count += 1;
    }
    (count > MAX_REPEATS).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(text: &str, ranges: &[(usize, usize)], keep: &[&str]) -> String {
        let mut out = String::new();
        let mut r = ranges.to_vec();
        if cut_emotes(text, &mut r, |n| keep.contains(&n), &mut out) {
            out
        } else {
            text.to_string()
        }
    }

    #[test]
    fn cuts_by_character_position() {
        assert_eq!(cut("Kappa hi Kappa", &[(0, 4), (9, 13)], &[]), "  hi  ");
        assert_eq!(cut("😀 Kappa é", &[(2, 6)], &[]), "😀   é");
        assert_eq!(cut("a LUL b", &[(2, 4)], &["LUL"]), "a LUL b");
        assert_eq!(cut("x KappaKappa y", &[(7, 11), (2, 6)], &[]), "x    y");
    }

    #[test]
    fn ignores_bad_ranges() {
        assert_eq!(cut("hi", &[(5, 9)], &[]), "hi");
        assert_eq!(cut("hi", &[(1, 0)], &[]), "hi");
        assert_eq!(cut("hi", &[(0, 2)], &[]), "hi");
        assert_eq!(cut("hi", &[(0, usize::MAX)], &[]), "hi");
        assert_eq!(cut("abcdef", &[(0, 3), (2, 4)], &[]), " ef");
        assert_eq!(cut("", &[(0, 0)], &[]), "");
    }

    #[test]
    fn spam_needs_more_than_ten_identical_tokens() {
        assert_eq!(spam_token(&"LUL ".repeat(11)), Some("LUL"));
        assert_eq!(spam_token(&"LUL ".repeat(10)), None);
        assert_eq!(spam_token(&("LUL ".repeat(11) + "lul")), None);
        assert_eq!(spam_token(""), None);
    }
}
