//! Durations and instants as a person reads them, one function for every command: the probe,
//! `cert inspect`, `cert list` and `cert verify` all say "in 23 h" or "expired 3 s ago" the same
//! way, right at every scale from seconds to years (no "1 days ago" seconds after expiry, no
//! "0 days left" for 23 hours). It lives in this pure crate because it is the one every other
//! crate already depends on.

/// Unix seconds as RFC 3339 UTC to the second (`2026-12-04T20:34:41Z`): the one spelling of an
/// instant in every output, log line and JSON document (a time out of range prints as seconds).
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

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

/// The longest duration any flag or config key takes (100 years of 365 days): longer than any
/// root's life, and small enough that "now + duration" stays far inside every date type used
/// (a `--ttl 3000000d` once overflowed `time::OffsetDateTime` and panicked).
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(100 * YEAR);

/// A length of time as a person writes it, the one grammar of the whole binary (proxy and probe
/// flags, config files, the CA's TTLs): one or more `NUMBER UNIT` terms summed (`90s`, `1h30m`,
/// `1.5s`, `250ms`, `7d`, `2w`, `1y`), units `ms`, `s`, `m`, `h`, `d`, `w`, `y` (and their long
/// names, `min`, `hours`, ...), or a bare number of seconds (`10`). Bounded: at most
/// [`MAX_DURATION`], never negative. Callers with a narrower range check it on the value
/// ([`HumanDuration::parse_ttl`] is the CA's: a unit is required and zero is refused).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub std::time::Duration);

/// Why a text is not a [`HumanDuration`]: the input and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationError {
    pub input: String,
    pub detail: String,
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid duration {:?}: {}", self.input, self.detail)
    }
}

impl std::error::Error for DurationError {}

const UNITS_HINT: &str = "ms, s, m, h, d, w or y";

fn unit_nanos(unit: &str) -> Option<u128> {
    const S: u128 = 1_000_000_000;
    Some(match unit {
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => S / 1000,
        "s" | "sec" | "secs" | "second" | "seconds" => S,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * S,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600 * S,
        "d" | "day" | "days" => 86_400 * S,
        "w" | "week" | "weeks" => 7 * 86_400 * S,
        "y" | "yr" | "yrs" | "year" | "years" => 365 * 86_400 * S,
        _ => return None,
    })
}

impl HumanDuration {
    pub fn get(self) -> std::time::Duration {
        self.0
    }

    /// Parses the grammar and also says whether a unit was written (a bare number has none).
    fn parse_terms(input: &str) -> Result<(std::time::Duration, bool), DurationError> {
        let bad = |detail: String| DurationError {
            input: input.to_string(),
            detail,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("empty (e.g. 10s, 5m, 24h)".into()));
        }
        let too_large = || bad("too large (at most 100 years, e.g. 36500d)".into());
        let mut total: u128 = 0;
        let mut rest = s;
        let mut had_unit = false;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(rest.len());
            let num = &rest[..num_len];
            let (int, frac) = num.split_once('.').unwrap_or((num, ""));
            if num.is_empty()
                || (int.is_empty() && frac.is_empty())
                || !frac.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad(format!(
                    "expected a number followed by a unit ({UNITS_HINT}), e.g. 10s or 24h"
                )));
            }
            rest = rest[num_len..].trim_start();
            let unit_len = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = rest[unit_len..].trim_start();
            let mult = if unit.is_empty() {
                if !rest.is_empty() || total != 0 || had_unit {
                    return Err(bad(format!("missing unit ({UNITS_HINT}), e.g. 24h")));
                }
                1_000_000_000
            } else {
                had_unit = true;
                unit_nanos(unit)
                    .ok_or_else(|| bad(format!("unknown unit {unit:?} (use {UNITS_HINT})")))?
            };
            let int: u128 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| too_large())?
            };
            let frac = &frac[..frac.len().min(18)];
            let frac_nanos = if frac.is_empty() {
                0
            } else {
                let f: u128 = frac.parse().map_err(|_| too_large())?;
                f * mult / 10u128.pow(frac.len() as u32)
            };
            total = int
                .checked_mul(mult)
                .and_then(|v| v.checked_add(frac_nanos))
                .and_then(|v| v.checked_add(total))
                .ok_or_else(too_large)?;
        }
        if total > MAX_DURATION.as_nanos() {
            return Err(too_large());
        }
        let d = std::time::Duration::new(
            (total / 1_000_000_000) as u64,
            (total % 1_000_000_000) as u32,
        );
        Ok((d, had_unit))
    }

    /// The CA's durations (`--ttl`, token lifetimes): a unit is required (a unit-less TTL is a
    /// mistake waiting to happen) and zero is refused.
    pub fn parse_ttl(input: &str) -> Result<Self, DurationError> {
        let (d, had_unit) = Self::parse_terms(input)?;
        let bad = |detail: &str| DurationError {
            input: input.to_string(),
            detail: detail.to_string(),
        };
        if !had_unit {
            return Err(bad("missing unit (s, m, h, d, w or y), e.g. 24h"));
        }
        if d.is_zero() {
            return Err(bad("must be greater than zero"));
        }
        Ok(Self(d))
    }

    /// This value if it lies in `min..=max`, else an error naming the range.
    pub fn within(
        self,
        input: &str,
        min: std::time::Duration,
        max: std::time::Duration,
    ) -> Result<Self, DurationError> {
        if self.0 < min || self.0 > max {
            return Err(DurationError {
                input: input.to_string(),
                detail: format!(
                    "must be between {} and {}",
                    HumanDuration(min),
                    HumanDuration(max)
                ),
            });
        }
        Ok(self)
    }
}

/// [`HumanDuration`]'s grammar as a plain `Duration` (clap's `value_parser`, config keys).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, DurationError> {
    s.parse::<HumanDuration>().map(HumanDuration::get)
}

impl std::str::FromStr for HumanDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_terms(s).map(|(d, _)| Self(d))
    }
}

impl From<HumanDuration> for std::time::Duration {
    fn from(h: HumanDuration) -> Self {
        h.0
    }
}

impl From<std::time::Duration> for HumanDuration {
    fn from(d: std::time::Duration) -> Self {
        Self(d)
    }
}

/// The shortest text the grammar reads back as the same value: `10s`, `5m`, `1h30m`, `250ms`.
impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nanos = self.0.subsec_nanos();
        if !nanos.is_multiple_of(1_000_000) {
            return write!(f, "{}s", self.0.as_secs_f64());
        }
        let mut secs = self.0.as_secs();
        let ms = nanos / 1_000_000;
        if secs == 0 && ms == 0 {
            return f.write_str("0s");
        }
        for (unit, name) in [(YEAR, "y"), (DAY, "d"), (HOUR, "h"), (MIN, "m"), (1, "s")] {
            if secs >= unit {
                write!(f, "{}{name}", secs / unit)?;
                secs %= unit;
            }
        }
        if ms > 0 {
            write!(f, "{ms}ms")?;
        }
        Ok(())
    }
}

/// A string in the grammar, or an integer number of seconds (`idle_timeout = 60`).
impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"10s\", \"5m\" or \"1h\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                v.parse().map_err(|e: DurationError| E::custom(e))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                v.to_string()
                    .parse()
                    .map_err(|e: DurationError| E::custom(e))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                v.to_string()
                    .parse()
                    .map_err(|e: DurationError| E::custom(e))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "invalid duration {v}: must not be negative"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
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

    #[test]
    fn one_grammar_for_every_old_parser() {
        use std::time::Duration as D;
        let p = |s: &str| s.parse::<HumanDuration>().map(HumanDuration::get);
        // The proxy's and the probe's: ms, decimals, a bare number of seconds, zero.
        assert_eq!(p("10s"), Ok(D::from_secs(10)));
        assert_eq!(p("5m"), Ok(D::from_secs(300)));
        assert_eq!(p("1h"), Ok(D::from_secs(3600)));
        assert_eq!(p("250ms"), Ok(D::from_millis(250)));
        assert_eq!(p("7"), Ok(D::from_secs(7)));
        assert_eq!(p("1.5s"), Ok(D::from_millis(1500)));
        assert_eq!(p(" 0 "), Ok(D::ZERO));
        // The CA's: days, weeks, years, long names, sums.
        assert_eq!(p("7d"), Ok(D::from_secs(7 * DAY)));
        assert_eq!(p("2w"), Ok(D::from_secs(14 * DAY)));
        assert_eq!(p("1h30m"), Ok(D::from_secs(5400)));
        assert_eq!(p("1 hour 30 minutes"), Ok(D::from_secs(5400)));
        assert_eq!(p("36500d"), Ok(MAX_DURATION));
        for bad in ["", "s", "10x", "-1s", "ten", "1.2.3s", "10 5s", "5 parsecs"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        for huge in ["36501d", "99999999999999d", "18446744073709551615s", "1e9"] {
            assert!(p(huge).is_err(), "{huge}");
        }
        assert!(p("36501d").unwrap_err().to_string().contains("too large"));
        assert!(p("5 parsecs").unwrap_err().to_string().contains("parsecs"));
    }

    #[test]
    fn ttl_rules_and_ranges() {
        assert!(HumanDuration::parse_ttl("24")
            .unwrap_err()
            .to_string()
            .contains("missing unit"));
        assert!(HumanDuration::parse_ttl("0s").is_err());
        assert_eq!(
            HumanDuration::parse_ttl("24h").unwrap().get().as_secs(),
            DAY
        );
        let one_h = std::time::Duration::from_secs(3600);
        let ms = std::time::Duration::from_millis(1);
        let d: HumanDuration = "2h".parse().unwrap();
        assert!(d.within("2h", ms, one_h).is_err());
    }

    #[test]
    fn display_reads_back() {
        for s in ["10s", "5m", "1h30m", "250ms", "1y2d", "0s", "1m1s500ms"] {
            let d: HumanDuration = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
            assert_eq!(d.to_string().parse::<HumanDuration>().unwrap(), d);
        }
    }
}
