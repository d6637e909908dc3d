//! Durations as people write them on a command line (`500ms`, `30s`, `1m`, `12h`, `7d`, `1h30m`),
//! and as jobq prints them back, in the same form: what `queues show` prints can be given to
//! `queues set` as it is.

use std::fmt::Write as _;

const MS_PER_SECOND: u64 = 1000;
const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: u64 = 24 * MS_PER_HOUR;
const MS_PER_WEEK: u64 = 7 * MS_PER_DAY;

/// The units a duration is written in, with their length in ms.
const UNITS: [(&str, u64); 6] = [
    ("w", MS_PER_WEEK),
    ("d", MS_PER_DAY),
    ("h", MS_PER_HOUR),
    ("m", MS_PER_MINUTE),
    ("s", MS_PER_SECOND),
    ("ms", 1),
];

/// The error of a duration too long to count in milliseconds.
pub const TOO_LONG: &str = "too long a duration";

/// The units' names, for error messages.
pub const UNIT_NAMES: &str = "ms, s, m, h, d or w";

/// What a duration looks like, for error messages.
const DURATION_HINT: &str = "a whole number and a unit (ms, s, m, h, d or w), such as 500ms, 30s, 12h, 7d or 1h30m";

/// `text` in milliseconds: whole numbers each followed by a unit, added up (`1h30m`). A number
/// needs its unit: `500` could be seconds as well as milliseconds.
pub fn parse_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("an empty duration: write {DURATION_HINT}"));
    }
    let mut rest = text;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if number.is_empty() {
            return Err(format!("not a duration: write {DURATION_HINT}"));
        }
        if unit.is_empty() {
            return Err(format!("a duration needs a unit: write {DURATION_HINT}"));
        }
        let Some(&(_, unit_ms)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!("{unit:?} is not a unit of time: write {DURATION_HINT}"));
        };
        total = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_ms))
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| TOO_LONG.to_owned())?;
        rest = next;
    }
    Ok(total)
}

/// `ms` in the form [`parse_ms`] reads, largest units first: `7d`, `1h30m`, `1s500ms`, `0ms`.
/// Weeks are given as days (`14d`), as retention periods usually are.
pub fn format_ms(ms: u64) -> String {
    if ms == 0 {
        return "0ms".to_owned();
    }
    let mut text = String::new();
    let mut rest = ms;
    for (name, unit_ms) in UNITS.iter().skip(1) {
        if rest >= *unit_ms {
            let _ = write!(text, "{}{name}", rest / unit_ms);
            rest %= unit_ms;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_in_each_unit_and_added_up() {
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("1s"), Ok(1000));
        assert_eq!(parse_ms("1m"), Ok(60_000));
        assert_eq!(parse_ms("12h"), Ok(43_200_000));
        assert_eq!(parse_ms("7d"), Ok(604_800_000));
        assert_eq!(parse_ms("2w"), Ok(1_209_600_000));
        assert_eq!(parse_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_ms("1s500ms"), Ok(1500));
        assert_eq!(parse_ms(" 30s "), Ok(30_000));
        assert_eq!(parse_ms("0s"), Ok(0));
    }

    #[test]
    fn a_duration_without_a_known_unit_is_refused_with_what_to_write() {
        for bad in ["", "500", "7x", "1.5h", "-1s", "s", "1 h", "1H", "1h30", "10y"] {
            let err = parse_ms(bad).expect_err(bad);
            assert!(err.contains("such as 500ms, 30s"), "{bad:?}: {err}");
        }
        assert_eq!(
            parse_ms("7x"),
            Err(format!("\"x\" is not a unit of time: write {DURATION_HINT}"))
        );
        assert_eq!(
            parse_ms("500"),
            Err(format!("a duration needs a unit: write {DURATION_HINT}"))
        );
        assert_eq!(parse_ms("99999999999999999999d"), Err(TOO_LONG.to_owned()));
        assert_eq!(parse_ms("9999999999999999d"), Err(TOO_LONG.to_owned()));
    }

    #[test]
    fn durations_are_printed_as_they_are_written_and_read_back() {
        assert_eq!(format_ms(0), "0ms");
        assert_eq!(format_ms(500), "500ms");
        assert_eq!(format_ms(1500), "1s500ms");
        assert_eq!(format_ms(60_000), "1m");
        assert_eq!(format_ms(5_400_000), "1h30m");
        assert_eq!(format_ms(604_800_000), "7d");
        assert_eq!(format_ms(315_360_000_000), "3650d");
        for ms in [1, 999, 1000, 61_001, 86_400_000, 90_061_001, 315_360_000_000] {
            assert_eq!(parse_ms(&format_ms(ms)), Ok(ms), "{ms}");
        }
    }
}
