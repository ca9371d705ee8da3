//! Per-peer-IP token buckets: one client (or one misbehaving script) cannot keep the CA busy
//! signing for everyone else. Small on purpose: a map behind a mutex, with idle buckets evicted
//! when the map grows, so a scan from many addresses cannot grow it without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// More distinct IPs than this triggers eviction of idle (full) buckets.
const MAX_TRACKED: usize = 10_000;

/// `--rate-limit`: requests per second (`10/s`, `600/m`) with a burst of twice that (at
/// least 1), or `off`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateSpec {
    /// Tokens per second; `None` when disabled.
    pub per_sec: Option<f64>,
    pub burst: f64,
}

impl FromStr for RateSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(RateSpec {
                per_sec: None,
                burst: 0.0,
            });
        }
        let bad = || format!("invalid rate {s:?}: expected N/s, N/m or off (e.g. 10/s)");
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let n: f64 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            _ => return Err(bad()),
        };
        if !n.is_finite() || n <= 0.0 || n > 1e6 {
            return Err(bad());
        }
        let per_sec = n / per;
        Ok(RateSpec {
            per_sec: Some(per_sec),
            burst: (2.0 * n).max(1.0),
        })
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The limiter. `check` is O(1) apart from the occasional eviction sweep.
pub struct RateLimiter {
    spec: RateSpec,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(spec: RateSpec) -> RateLimiter {
        RateLimiter {
            spec,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip`; `Err(wait)` says how long until one is available.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let Some(rate) = self.spec.per_sec else {
            return Ok(());
        };
        let burst = self.spec.burst;
        // A poisoned lock only means another request panicked mid-update; the map is still
        // usable (worst case one bucket is slightly off).
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            let full_after = Duration::from_secs_f64(burst / rate);
            map.retain(|_, b| now.saturating_duration_since(b.last) < full_after);
            if map.len() >= MAX_TRACKED {
                // Every tracked address is active: drop the oldest half rather than grow.
                let mut ages: Vec<Instant> = map.values().map(|b| b.last).collect();
                ages.sort();
                let cut = ages[ages.len() / 2];
                map.retain(|_, b| b.last > cut);
            }
        }
        let b = map.entry(ip).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parse() {
        let r: RateSpec = "10/s".parse().unwrap();
        assert_eq!(r.per_sec, Some(10.0));
        assert_eq!(r.burst, 20.0);
        assert_eq!("60/m".parse::<RateSpec>().unwrap().per_sec, Some(1.0));
        assert_eq!("off".parse::<RateSpec>().unwrap().per_sec, None);
        for bad in ["10", "0/s", "-1/s", "x/s", "10/d"] {
            assert!(bad.parse::<RateSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn burst_then_refill_per_ip() {
        let l = RateLimiter::new("10/s".parse().unwrap());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..20 {
            l.check(a, t0).unwrap();
        }
        let wait = l.check(a, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // Another address has its own bucket.
        l.check(b, t0).unwrap();
        // 100 ms later one token is back.
        l.check(a, t0 + Duration::from_millis(100)).unwrap();
        assert!(l.check(a, t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn eviction_bounds_the_map() {
        let l = RateLimiter::new("1/s".parse().unwrap());
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let ip = IpAddr::from(i.to_be_bytes());
            let _ = l.check(ip, t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_TRACKED);
    }
}
