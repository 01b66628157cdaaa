//! Turns a chat line into the text the detector (and the translator) should see.
//!
//! Chat lines are short and full of tokens that carry no language signal but do carry
//! trigrams: emote codes (whatlang reads `PogChamp` as Shona, `KEKW` as Indonesian),
//! @mentions (usernames are random letters), URLs, and stretched words (`soooooo`). Left
//! in, they can decide the detector's answer on a five-word line, so they are removed
//! first.

use std::collections::HashSet;

/// Longest run of one repeated character kept: "soooooo" becomes "soo". Two, not one,
/// because doubled letters are real spelling in most languages ("cool", "Kaffee").
const MAX_RUN: usize = 2;

/// Top-level domains that mark a bare `word.tld/...` token as a link. Only the ones chat
/// links actually use: a longer list would start eating sentence-ending typos ("ok.so").
const LINK_TLDS: &[&str] = &[
    "com", "net", "org", "tv", "gg", "io", "ly", "be", "co", "me", "app", "dev", "xyz", "de", "fr",
    "es", "ru", "jp", "kr", "br", "pl", "it", "uk", "nl", "info", "link", "clips",
];

/// Removes emotes (by their character positions), third-party emote words, @mentions and
/// links, collapses character runs longer than [`MAX_RUN`], and joins the remaining words
/// with single spaces.
///
/// `emotes` are Twitch's inclusive code-point ranges. Ranges that are reversed or reach
/// past the text are clipped or ignored rather than trusted, since tags come from the
/// network.
pub fn clean_text(
    text: &str,
    emotes: impl IntoIterator<Item = (u32, u32)>,
    emote_words: &HashSet<String>,
) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (start, end) in emotes {
        let (start, end) = (start as usize, end as usize);
        if start > end || start >= chars.len() {
            continue;
        }
        let end = end.min(chars.len() - 1);
        // A space, not a deletion: "hiKappahi" must not glue its neighbours together.
        chars[start..=end].fill(' ');
    }
    let without_emotes: String = chars.into_iter().collect();

    let mut out = String::with_capacity(without_emotes.len());
    for word in without_emotes.split_whitespace() {
        if word.starts_with('@') || emote_words.contains(word) || is_link(word) {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        push_collapsed(&mut out, word);
    }
    out
}

/// Appends `word` with every run of one character cut to [`MAX_RUN`].
fn push_collapsed(out: &mut String, word: &str) {
    let mut prev = None;
    let mut run = 0;
    for c in word.chars() {
        if Some(c) == prev {
            run += 1;
        } else {
            prev = Some(c);
            run = 1;
        }
        if run <= MAX_RUN {
            out.push(c);
        }
    }
}

/// Whether a whitespace-separated token looks like a link.
fn is_link(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    if lower.contains("://") || lower.starts_with("www.") {
        return true;
    }
    // Bare links: `twitch.tv/foo`, `youtu.be/x`, `clips.twitch.tv/y`. The host part is what
    // precedes the first '/', its last label must be a known TLD.
    let host = lower.split('/').next().unwrap_or("");
    let host = host.trim_end_matches(['.', ',', '!', '?', ')']);
    match host.rsplit_once('.') {
        Some((name, tld)) => {
            !name.is_empty()
                && LINK_TLDS.contains(&tld)
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        }
        None => false,
    }
}

/// The number of letters in `text`: what `min_chars` counts. Digits, punctuation and emoji
/// carry no language signal, so "!!! 111 😂😂" must not pass as a long message.
pub fn letter_count(text: &str) -> usize {
    text.chars().filter(|c| c.is_alphabetic()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(text: &str, emotes: &[(u32, u32)]) -> String {
        let words: HashSet<String> = ["KEKW".to_string()].into_iter().collect();
        clean_text(text, emotes.iter().copied(), &words)
    }

    #[test]
    fn strips_emotes_by_char_position() {
        // "Kappa" at 6-10 after a multi-byte character: positions are code points, not bytes.
        assert_eq!(clean("héllo Kappa wörld", &[(6, 10)]), "héllo wörld");
        assert_eq!(clean("Kappa hi Kappa", &[(0, 4), (9, 13)]), "hi");
        assert_eq!(clean("hiKappahi", &[(2, 6)]), "hi hi");
    }

    #[test]
    fn bad_positions_are_ignored_or_clipped() {
        assert_eq!(clean("abc", &[(5, 9)]), "abc");
        assert_eq!(clean("abc", &[(2, 1)]), "abc");
        assert_eq!(clean("abc def", &[(4, 99)]), "abc");
        assert_eq!(clean("", &[(0, 0)]), "");
    }

    #[test]
    fn strips_mentions_links_and_emote_words() {
        assert_eq!(
            clean(
                "@streamer look https://x.com/a and twitch.tv/foo KEKW ok",
                &[]
            ),
            "look and ok"
        );
        assert_eq!(clean("www.example.org nice", &[]), "nice");
        // Sentence punctuation without a TLD is not a link.
        assert_eq!(clean("wait.what is that", &[]), "wait.what is that");
    }

    #[test]
    fn collapses_runs() {
        assert_eq!(clean("soooooo goooood!!!!!", &[]), "soo good!!");
        assert_eq!(clean("cool Kaffee", &[]), "cool Kaffee");
        assert_eq!(clean("ㅋㅋㅋㅋㅋ", &[]), "ㅋㅋ");
    }

    #[test]
    fn counts_letters_only() {
        assert_eq!(letter_count("ab 12 !! 😂 ñ"), 3);
        assert_eq!(letter_count("안녕 こんにちは"), 7);
    }
}
