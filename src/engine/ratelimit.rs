//! Token-bucket rate limiting for `--max-upload-rate` and
//! `--max-download-rate`.
//!
//! [`Bucket`] is the sans-IO core (time passed in). [`RateLimiter`] wraps
//! it in a `std::sync::Mutex`, shared by every peer task of one direction:
//! the lock is held only to reserve tokens, never across the sleep.
//!
//! Requests *reserve*: a take always succeeds and may leave the bucket in
//! debt, and the caller waits until the debt is paid off. So a request
//! larger than the burst waits in proportion to its size instead of never
//! fitting, and callers are served in arrival order. A cancelled wait keeps
//! its reservation: the limiter errs on the slow side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// A token bucket refilling at `rate` tokens (bytes) per second up to
/// `burst`. Starts full.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    rate: u64,
    /// Token-nanoseconds (tokens × 10⁹): refill is exact integer arithmetic,
    /// with no drift from rounding at small intervals. Negative is debt.
    level: i128,
    cap: i128,
    last: Instant,
}

impl Bucket {
    /// `rate` bytes per second (0 = unlimited) and at most `burst` bytes
    /// passed at once after idling.
    pub(crate) fn new(rate: u64, burst: u64, now: Instant) -> Bucket {
        let cap = i128::from(burst) * NANOS_PER_SEC;
        Bucket {
            rate,
            level: cap,
            cap,
            last: now,
        }
    }

    /// Reserves `n` tokens. `None`: go ahead now; `Some(wait)`: go ahead
    /// after `wait` (the tokens are already taken; do not call again).
    pub(crate) fn take(&mut self, n: u64, now: Instant) -> Option<Duration> {
        if self.rate == 0 {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.last = self.last.max(now);
        // Saturating: a long idle period simply fills the bucket.
        let refill = i128::try_from(elapsed)
            .unwrap_or(i128::MAX)
            .saturating_mul(i128::from(self.rate));
        self.level = self.level.saturating_add(refill).min(self.cap);
        self.level = self.level.saturating_sub(i128::from(n) * NANOS_PER_SEC);
        if self.level >= 0 {
            return None;
        }
        // Ceiling division: never wake before the debt is paid.
        let rate = i128::from(self.rate);
        let wait = (-self.level + rate - 1) / rate;
        Some(Duration::from_nanos(
            u64::try_from(wait).unwrap_or(u64::MAX),
        ))
    }
}

/// A shareable limiter; `Arc` it across the peer tasks of one direction.
/// The rate can change while it is in use (a user setting a new cap).
#[derive(Debug)]
pub struct RateLimiter {
    /// Bytes/s; 0 is unlimited and takes no lock at all.
    rate: AtomicU64,
    bucket: Mutex<Bucket>,
}

/// Burst for a rate: a quarter second of it, at least one block batch.
pub(crate) fn default_burst(rate: u64) -> u64 {
    (rate / 4).max(256 * 1024)
}

impl RateLimiter {
    /// `bytes_per_sec` 0 means unlimited.
    pub fn new(bytes_per_sec: u64, burst: u64) -> RateLimiter {
        RateLimiter {
            rate: AtomicU64::new(bytes_per_sec),
            bucket: Mutex::new(Bucket::new(bytes_per_sec, burst, now())),
        }
    }

    /// A limiter with the default burst for its rate.
    pub fn with_rate(bytes_per_sec: u64) -> RateLimiter {
        RateLimiter::new(bytes_per_sec, default_burst(bytes_per_sec))
    }

    pub fn unlimited() -> RateLimiter {
        RateLimiter::new(0, 0)
    }

    pub fn is_unlimited(&self) -> bool {
        self.rate() == 0
    }

    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Changes the rate (0: unlimited); the bucket starts full again.
    pub fn set_rate(&self, bytes_per_sec: u64) {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        *b = Bucket::new(bytes_per_sec, default_burst(bytes_per_sec), now());
        self.rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    /// Waits until `n` bytes may pass.
    pub async fn acquire(&self, n: u64) {
        if self.is_unlimited() {
            return;
        }
        // The guard is dropped at the end of this statement, before the sleep.
        let wait = self
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(n, now());
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

/// One limiter per direction.
#[derive(Debug)]
pub struct RatePair {
    pub up: RateLimiter,
    pub down: RateLimiter,
}

impl RatePair {
    pub fn new(up: u64, down: u64) -> RatePair {
        RatePair {
            up: RateLimiter::with_rate(up),
            down: RateLimiter::with_rate(down),
        }
    }
}

/// Tokio's clock, so that `tokio::time::pause` drives the limiter in tests.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn starts_full_and_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, 1000, t0);
        assert_eq!(b.take(1000, t0), None, "a full burst at once");
        assert_eq!(b.take(500, t0), Some(500 * MS));
        // The 500 were reserved: at 500 ms the bucket is empty, not in debt.
        assert_eq!(b.take(100, t0 + 500 * MS), Some(100 * MS));
        assert_eq!(b.take(250, t0 + 850 * MS), None, "250 ms refilled 250");
    }

    #[test]
    fn refill_stops_at_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, 1000, t0);
        assert_eq!(b.take(1000, t0), None);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.take(1000, later), None);
        assert_eq!(
            b.take(1, later),
            Some(MS),
            "an hour idle saved only the burst"
        );
    }

    #[test]
    fn requests_larger_than_the_burst_wait_in_proportion() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, 1000, t0);
        assert_eq!(b.take(5000, t0), Some(Duration::from_secs(4)));
        // The next caller queues behind the debt.
        assert_eq!(b.take(1000, t0), Some(Duration::from_secs(5)));
        let mut no_burst = Bucket::new(16_384, 0, t0);
        assert_eq!(no_burst.take(16_384, t0), Some(Duration::from_secs(1)));
    }

    #[test]
    fn small_takes_add_up_without_drift() {
        let t0 = Instant::now();
        let mut b = Bucket::new(3, 0, t0);
        // One token per 333.33 ms: 3000 single takes, each after the wait
        // it was given, end exactly 1000 s in.
        let mut now = t0;
        for _ in 0..3000 {
            now += b.take(1, now).unwrap_or_default();
        }
        assert!(now - t0 <= Duration::from_secs(1000) + MS, "{:?}", now - t0);
        assert!(now - t0 >= Duration::from_secs(1000) - MS, "{:?}", now - t0);
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut b = Bucket::new(0, 0, t0);
        assert_eq!(b.take(u64::MAX, t0), None);
        assert!(RateLimiter::new(0, 1000).is_unlimited());
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_sleeps_until_the_tokens_are_there() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1000, 1000));
        let start = tokio::time::Instant::now();
        limiter.acquire(1000).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.acquire(2000).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));

        // Concurrent callers share the rate: 2 × 1000 takes 2 s more.
        let a = tokio::spawn({
            let l = limiter.clone();
            async move { l.acquire(1000).await }
        });
        let b = tokio::spawn({
            let l = limiter.clone();
            async move { l.acquire(1000).await }
        });
        a.await.unwrap();
        b.await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_acquire_never_waits() {
        let limiter = RateLimiter::unlimited();
        let start = tokio::time::Instant::now();
        limiter.acquire(u64::MAX).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
