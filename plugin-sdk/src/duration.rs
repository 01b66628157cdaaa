//! Duration strings in the pipeline file: an integer followed by a unit, `"500ms"`,
//! `"20s"`, `"1m"`, `"2h"`.
//!
//! Shared by plugins whose `with` tables take durations (windows, cooldowns), so every
//! plugin accepts and rejects the same spellings. Hand-written rather than a dependency:
//! the grammar is one line and plugins should stay small. Compound forms (`"1m30s"`) and
//! fractions (`"1.5s"`) are rejected on purpose so every accepted string has exactly one
//! obvious meaning.

/// What every error message shows as the accepted form.
const EXPECTED: &str =
    "expected a whole number followed by ms, s, m or h, like \"500ms\", \"20s\", \"1m\"";

/// Parses a duration into milliseconds. Zero is allowed here; callers that need a
/// positive duration (a window) check that themselves, with their own message.
pub fn parse_ms(text: &str) -> Result<i64, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("{text:?}: {EXPECTED}"));
    }
    let unit_ms: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("{text:?} has no unit: {EXPECTED}")),
        _ => return Err(format!("{text:?} has unknown unit {unit:?}: {EXPECTED}")),
    };
    // `parse` fails only on overflow here, since `digits` is non-empty ASCII digits.
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    n.checked_mul(unit_ms)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_ms;

    #[test]
    fn accepts_each_unit() {
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("20s"), Ok(20_000));
        assert_eq!(parse_ms("1m"), Ok(60_000));
        assert_eq!(parse_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_ms("0s"), Ok(0));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "", "20", "s", "-5s", "1.5s", " 20s", "20s ", "20 s", "1m30s", "20S", "20sec", "²s",
        ] {
            let err = parse_ms(bad).unwrap_err();
            assert!(err.contains("expected a whole number"), "{bad:?}: {err}");
        }
        assert!(
            parse_ms("99999999999999999999s")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_ms("9999999999999999h")
                .unwrap_err()
                .contains("too large")
        );
    }
}
