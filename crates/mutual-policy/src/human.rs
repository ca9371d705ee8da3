//! Durations and instants as a person reads them, one function for every command: the probe,
//! `cert inspect`, `cert list` and `cert verify` all say "in 23 h" or "expired 3 s ago" the same
//! way, right at every scale from seconds to years (no "1 days ago" seconds after expiry, no
//! "0 days left" for 23 hours). It lives in this pure crate because it is the one every other
//! crate already depends on.

const MIN: u64 = 60;
const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;
/// A year of 365 days: the unit `--ttl 1y` means too.
const YEAR: u64 = 365 * DAY;

/// A length of time in at most two units, the larger first, truncated (never rounded up, so a
/// certificate with 23 h 59 min left never reads "1 d"): `42 s`, `4 min 5 s`, `23 h`,
/// `23 h 59 min`, `6 d 2 h`, `2 y 30 d`.
pub fn duration(secs: u64) -> String {
    let units = [(YEAR, "y"), (DAY, "d"), (HOUR, "h"), (MIN, "min"), (1, "s")];
    let Some(i) = units.iter().position(|(u, _)| secs >= *u) else {
        return "0 s".to_string();
    };
    let (big, big_name) = units[i];
    let n = secs / big;
    let rest = secs % big;
    match units.get(i + 1) {
        Some((small, small_name)) if rest / small > 0 => {
            format!("{n} {big_name} {} {small_name}", rest / small)
        }
        _ => format!("{n} {big_name}"),
    }
}

/// An instant relative to now, given as seconds from now (negative = in the past):
/// `in 23 h`, `3 s ago`, `now`.
pub fn relative(secs_from_now: i64) -> String {
    match secs_from_now {
        0 => "now".to_string(),
        s if s > 0 => format!("in {}", duration(s.unsigned_abs())),
        s => format!("{} ago", duration(s.unsigned_abs())),
    }
}

/// What is left of a validity period ending `secs_left` seconds from now: `23 h left`, or
/// `expired 3 s ago` once it has ended.
pub fn time_left(secs_left: i64) -> String {
    if secs_left > 0 {
        format!("{} left", duration(secs_left.unsigned_abs()))
    } else {
        format!("expired {} ago", duration(secs_left.unsigned_abs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scale() {
        assert_eq!(duration(0), "0 s");
        assert_eq!(duration(1), "1 s");
        assert_eq!(duration(42), "42 s");
        assert_eq!(duration(60), "1 min");
        assert_eq!(duration(245), "4 min 5 s");
        assert_eq!(duration(23 * HOUR), "23 h");
        assert_eq!(duration(DAY - 1), "23 h 59 min");
        assert_eq!(duration(DAY), "1 d");
        assert_eq!(duration(6 * DAY + 2 * HOUR + 5), "6 d 2 h");
        assert_eq!(duration(YEAR), "1 y");
        assert_eq!(duration(2 * YEAR + 30 * DAY + 7), "2 y 30 d");
        assert_eq!(duration(10 * YEAR), "10 y");
    }

    #[test]
    fn relative_and_left() {
        assert_eq!(relative(42), "in 42 s");
        assert_eq!(relative(23 * 3600), "in 23 h");
        assert_eq!(relative(-3), "3 s ago");
        assert_eq!(relative(0), "now");
        assert_eq!(time_left(23 * 3600 + 59 * 60), "23 h 59 min left");
        assert_eq!(time_left(-3), "expired 3 s ago");
        assert_eq!(time_left(0), "expired 0 s ago");
        assert_eq!(time_left(-2 * 86_400), "expired 2 d ago");
    }
}
