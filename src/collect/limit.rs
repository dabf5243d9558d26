//! Rate limits for the public endpoints: token buckets per caller address and overall, each
//! refilled at `rate` per second with a burst of one second. The per-address table is bounded:
//! past `MAX_TRACKED` addresses, idle ones are dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(rate: u32, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(rate),
            last: now,
        }
    }

    fn take(&mut self, rate: u32, now: Instant) -> bool {
        let rate = f64::from(rate);
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Which limit refused a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    PerIp,
    Global,
}

/// The limits of the public listener (0 = off).
#[derive(Debug)]
pub struct RateLimiter {
    per_ip: u32,
    global: u32,
    global_bucket: Mutex<Bucket>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(per_ip: u32, global: u32) -> Self {
        let now = Instant::now();
        RateLimiter {
            per_ip,
            global,
            global_bucket: Mutex::new(Bucket::full(global, now)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether limits are configured at all (the request path skips everything otherwise).
    pub fn is_active(&self) -> bool {
        self.per_ip > 0 || self.global > 0
    }

    /// Takes one hit from `ip`'s bucket and the global one.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), Limited> {
        let now = Instant::now();
        if self.per_ip > 0
            && let Some(ip) = ip
        {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            if buckets.len() >= MAX_TRACKED {
                // Buckets idle for a second are full again: forgetting them changes nothing.
                buckets.retain(|_, b| now.duration_since(b.last).as_secs_f64() < 1.0);
            }
            let bucket = buckets
                .entry(ip)
                .or_insert_with(|| Bucket::full(self.per_ip, now));
            if !bucket.take(self.per_ip, now) {
                return Err(Limited::PerIp);
            }
        }
        if self.global > 0
            && !self
                .global_bucket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(self.global, now)
        {
            return Err(Limited::Global);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_then_refusal_per_address() {
        let limiter = RateLimiter::new(5, 0);
        let a: IpAddr = [203, 0, 113, 1].into();
        let b: IpAddr = [203, 0, 113, 2].into();
        let allowed = (0..20).filter(|_| limiter.check(Some(a)).is_ok()).count();
        assert_eq!(allowed, 5);
        assert_eq!(limiter.check(Some(a)), Err(Limited::PerIp));
        assert_eq!(
            limiter.check(Some(b)),
            Ok(()),
            "another address has its own bucket"
        );
    }

    #[test]
    fn the_global_limit_counts_every_caller_and_off_means_off() {
        let limiter = RateLimiter::new(0, 3);
        let ok = (0..10u8)
            .filter(|i| limiter.check(Some([198, 51, 100, *i].into())).is_ok())
            .count();
        assert_eq!(ok, 3);
        let off = RateLimiter::new(0, 0);
        assert!(!off.is_active());
        assert!((0..1000).all(|_| off.check(None).is_ok()));
    }
}
