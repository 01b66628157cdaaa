//! Language detection: whatlang plus the ISO 639-3 → 639-1 mapping and the `und` rules.

use whatlang::{Detector, Lang};

/// The code written when the language is unknown (ISO 639-2 "undetermined").
pub const UNDETERMINED: &str = "und";

/// Maps whatlang's ISO 639-3 code to ISO 639-1. Matching on the code string rather than
/// the `Lang` enum keeps this compiling when a whatlang release adds languages; those fall
/// through to `None` (reported as `und`) until they are added here.
pub fn iso639_1(lang: Lang) -> Option<&'static str> {
    Some(match lang.code() {
        "afr" => "af",
        "aka" => "ak",
        "amh" => "am",
        "ara" => "ar",
        "aze" => "az",
        "bel" => "be",
        "ben" => "bn",
        "bul" => "bg",
        "cat" => "ca",
        "ces" => "cs",
        // Mandarin is a member of the `zh` macrolanguage, which is what 639-1 has.
        "cmn" => "zh",
        "cym" => "cy",
        "dan" => "da",
        "deu" => "de",
        "ell" => "el",
        "eng" => "en",
        "epo" => "eo",
        "est" => "et",
        "fin" => "fi",
        "fra" => "fr",
        "guj" => "gu",
        "heb" => "he",
        "hin" => "hi",
        "hrv" => "hr",
        "hun" => "hu",
        "hye" => "hy",
        "ind" => "id",
        "ita" => "it",
        "jav" => "jv",
        "jpn" => "ja",
        "kan" => "kn",
        "kat" => "ka",
        "khm" => "km",
        "kor" => "ko",
        "lat" => "la",
        "lav" => "lv",
        "lit" => "lt",
        "mal" => "ml",
        "mar" => "mr",
        "mkd" => "mk",
        "mya" => "my",
        "nep" => "ne",
        "nld" => "nl",
        // Norwegian Bokmål has its own 639-1 code; `no` would be the macrolanguage.
        "nob" => "nb",
        "ori" => "or",
        "pan" => "pa",
        // Iranian Persian: a member of the `fa` macrolanguage.
        "pes" => "fa",
        "pol" => "pl",
        "por" => "pt",
        "ron" => "ro",
        "rus" => "ru",
        "sin" => "si",
        "slk" => "sk",
        "slv" => "sl",
        "sna" => "sn",
        "spa" => "es",
        "srp" => "sr",
        "swe" => "sv",
        "tam" => "ta",
        "tel" => "te",
        "tgl" => "tl",
        "tha" => "th",
        "tuk" => "tk",
        "tur" => "tr",
        "ukr" => "uk",
        "urd" => "ur",
        "uzb" => "uz",
        "vie" => "vi",
        "yid" => "yi",
        "zul" => "zu",
        _ => return None,
    })
}

/// The whatlang language for an ISO 639-1 code (the inverse of [`iso639_1`]).
pub fn from_iso639_1(code: &str) -> Option<Lang> {
    Lang::all()
        .iter()
        .copied()
        .find(|l| iso639_1(*l) == Some(code))
}

/// What detection decided for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// ISO 639-1 code, or [`UNDETERMINED`].
    pub lang: &'static str,
    /// Detector confidence in 0..=1; 0 when `lang` is [`UNDETERMINED`].
    pub confidence: f64,
}

impl Detection {
    /// The undetermined result.
    pub fn undetermined() -> Self {
        Detection {
            lang: UNDETERMINED,
            confidence: 0.0,
        }
    }

    /// Whether a language was determined.
    pub fn is_known(&self) -> bool {
        self.lang != UNDETERMINED
    }
}

/// A configured detector: whatlang with an optional allowlist and the `und` thresholds.
#[derive(Debug, Clone)]
pub struct LangDetector {
    detector: Detector,
    min_letters: usize,
    min_confidence: f64,
}

impl LangDetector {
    /// `allow` empty means every language whatlang knows.
    pub fn new(allow: Vec<Lang>, min_letters: usize, min_confidence: f64) -> Self {
        let detector = if allow.is_empty() {
            Detector::new()
        } else {
            Detector::with_allowlist(allow)
        };
        LangDetector {
            detector,
            min_letters,
            min_confidence,
        }
    }

    /// Detects the language of already-cleaned text (see [`crate::clean::clean_text`]).
    pub fn detect(&self, cleaned: &str) -> Detection {
        if crate::clean::letter_count(cleaned) < self.min_letters {
            return Detection::undetermined();
        }
        let Some(info) = self.detector.detect(cleaned) else {
            return Detection::undetermined();
        };
        let confidence = info.confidence();
        // Written so that a NaN confidence also counts as too low.
        if confidence.is_nan() || confidence < self.min_confidence {
            return Detection::undetermined();
        }
        match iso639_1(info.lang()) {
            Some(lang) => Detection { lang, confidence },
            None => Detection::undetermined(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_whatlang_language_has_a_639_1_code_and_round_trips() {
        for &l in Lang::all() {
            let code = iso639_1(l).unwrap_or_else(|| panic!("{l:?} unmapped"));
            assert_eq!(code.len(), 2);
            assert_eq!(from_iso639_1(code), Some(l));
        }
        assert_eq!(from_iso639_1("xx"), None);
    }

    #[test]
    fn short_text_is_undetermined() {
        let d = LangDetector::new(vec![], 8, 0.0);
        // 7 letters: below the threshold however clear the language.
        assert_eq!(d.detect("hola tío"), Detection::undetermined());
        assert_eq!(d.detect("gg wp"), Detection::undetermined());
        assert_eq!(d.detect(""), Detection::undetermined());
        assert_eq!(d.detect("!!! 1234567890 ??"), Detection::undetermined());
        // Hangul is unambiguous, so once long enough it is detected with full confidence.
        assert_eq!(d.detect("안녕하세요 처음 왔어요").lang, "ko");
    }

    #[test]
    fn low_confidence_is_undetermined() {
        let strict = LangDetector::new(vec![], 1, 1.1);
        assert_eq!(
            strict.detect("das ist ein sehr langer deutscher Satz"),
            Detection::undetermined()
        );
    }
}
