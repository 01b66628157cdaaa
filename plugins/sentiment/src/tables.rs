//! Read-only lookups into the tables `build.rs` generates from `data/` and VADER's word
//! lists, and the built-in Twitch emote table.

/// Booster (+0.293) or dampener (-0.293), as in the reference's `BOOSTER_DICT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Boost {
    Incr,
    Decr,
}

/// Everything the per-token rules need to know about a lowercased word.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WordInfo {
    /// Mean valence in `vader_lexicon.txt`, when the word is in it.
    pub valence: Option<f64>,
    /// Whether the word is a single-word booster/dampener.
    pub boost: Option<Boost>,
    /// Whether the word is in the reference's `NEGATE` list.
    pub negation: bool,
    /// The word's `KW_*` id when a rule compares tokens with it ("no", "but", ...), else 0.
    pub kw: u8,
}

/// One line of `data/twitch_emotes.tsv`, the built-in Twitch emote lexicon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuiltinEmote {
    /// The emote's name, exactly as typed in chat (matching is case-sensitive).
    pub name: &'static str,
    /// Valence on VADER's -4..+4 word scale.
    pub valence: f64,
    /// The group it is filed under (`hype`, `laughter`, `sad`, ...; see docs/SENTIMENT.md).
    pub group: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/tables.rs"));

/// What VADER knows about `word`, which must already be lowercased (the reference looks
/// up `token.lower()`).
pub(crate) fn word_info(word: &str) -> Option<&'static WordInfo> {
    if word.len() > MAX_WORD_LEN {
        return None;
    }
    word_info_hashed(word.as_bytes(), crate::hash::word_hash(word.as_bytes()))
}

/// [`word_info`] for a word whose [`crate::hash::word_hash`] is already known.
#[inline]
pub(crate) fn word_info_hashed(word: &[u8], h: u64) -> Option<&'static WordInfo> {
    let mask = SLOTS.len() - 1;
    let tag = (h >> 48) as u32;
    // Truncating the hash is intended: only the low bits select a slot, exactly as in
    // build.rs (the table is far smaller than 2^32 slots, so 32-bit targets agree).
    let mut slot = h as usize & mask;
    // The table is at most half full, so an empty slot always ends the walk; the bound
    // merely makes termination obvious.
    for _ in 0..SLOTS.len() {
        let entry = *SLOTS.get(slot)?;
        if entry == u32::MAX {
            return None;
        }
        if entry >> 16 == tag {
            let (key, info) = WORDS.get((entry & 0xffff) as usize)?;
            if crate::pystr::short_eq(key.as_bytes(), word) {
                return Some(info);
            }
        }
        slot = (slot + 1) & mask;
    }
    None
}

/// The built-in Twitch emotes, sorted by name.
pub(crate) fn builtin_emotes() -> &'static [BuiltinEmote] {
    &TWITCH_EMOTES
}

/// The description the reference substitutes for the single-code-point emoji `c`.
#[inline]
pub(crate) fn emoji_description(c: char) -> Option<&'static str> {
    // Every key is outside ASCII; most chat characters are ASCII, so skip the search.
    if c.is_ascii() {
        return None;
    }
    let block = c as usize >> 5;
    if EMOJI_BLOCKS
        .get(block >> 6)
        .is_none_or(|w| w & (1 << (block & 63)) == 0)
    {
        return None;
    }
    EMOJI
        .binary_search_by_key(&c, |(k, _)| *k)
        .ok()
        .and_then(|i| EMOJI.get(i))
        .map(|(_, d)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_is_reachable_through_the_index() {
        for (word, info) in WORDS.iter() {
            assert_eq!(word_info(word), Some(info), "{word:?}");
        }
        assert_eq!(word_info("definitely-not-a-word"), None);
        assert_eq!(word_info(""), None);
    }

    #[test]
    fn data_quirks_match_the_reference_loader() {
        let valence = |w| word_info(w).and_then(|i| i.valence);
        // 7,520 lines, 14 duplicate keys (the reference's dict keeps the last line).
        assert_eq!(
            WORDS.iter().filter(|(_, i)| i.valence.is_some()).count(),
            7506
        );
        assert_eq!(valence("no"), Some(-1.2));
        assert_eq!(valence(":)"), Some(2.0));
        assert_eq!(valence("kind"), Some(2.4));
        // Booster words outside the lexicon, negations, and both lists at once.
        assert_eq!(
            word_info("very").map(|i| (i.valence, i.boost)),
            Some((None, Some(Boost::Incr)))
        );
        assert_eq!(word_info("kinda").and_then(|i| i.boost), Some(Boost::Decr));
        assert!(word_info("without").is_some_and(|i| i.negation));
        assert!(word_info("good").is_some_and(|i| !i.negation && i.boost.is_none()));
        assert_eq!(emoji_description('😀'), Some("grinning face"));
        assert_eq!(emoji_description('❤'), Some("red heart"));
        assert_eq!(emoji_description('a'), None);
        assert!(EMOJI.windows(2).all(|w| w[0].0 < w[1].0));
        // The block filter lets every key through, and settles other characters.
        for (c, d) in EMOJI.iter() {
            assert_eq!(emoji_description(*c), Some(*d), "{c:?}");
        }
        for c in ['é', 'á', '오', '日', '\u{3000}', '\u{10ffff}'] {
            assert_eq!(emoji_description(c), None, "{c:?}");
        }
        assert!(WORDS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
