//! `bandwidthLimit` for writes Ferry makes itself (a filesystem destination), where
//! OpenDAL's throttle layer is not in the path.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A byte-rate limit shared by every transfer of a run: a virtual clock (GCRA) that each
/// write advances by its length over the rate, allowed a burst ahead of real time.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    burst: Duration,
    /// When the bytes handed out so far would have been sent at exactly the rate.
    clock: Mutex<Option<Instant>>,
}

impl Throttle {
    /// At most `rate` bytes per second on average, `burst` bytes at once.
    pub fn new(rate: u64, burst: u64) -> Self {
        let rate = rate.max(1) as f64;
        Self { rate, burst: Duration::from_secs_f64(burst.max(1) as f64 / rate), clock: Mutex::new(None) }
    }

    /// Waits until `bytes` more may be written.
    pub async fn take(&self, bytes: usize) {
        let now = Instant::now();
        let wait = {
            let mut clock = self.clock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let start = clock.map_or(now, |clock| clock.max(now));
            let end = start + Duration::from_secs_f64(bytes as f64 / self.rate);
            *clock = Some(end);
            end.saturating_duration_since(now + self.burst)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn writes_beyond_the_burst_wait_for_the_rate() {
        let throttle = Throttle::new(1000, 1000);
        let started = Instant::now();
        throttle.take(1000).await;
        assert_eq!(started.elapsed(), Duration::ZERO, "a burst goes at once");
        throttle.take(1000).await;
        throttle.take(500).await;
        let elapsed = started.elapsed().as_secs_f64();
        assert!((1.49..1.51).contains(&elapsed), "{elapsed}");
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle = Instant::now();
        throttle.take(1000).await;
        assert_eq!(idle.elapsed(), Duration::ZERO, "an idle throttle does not bank more than a burst");
    }
}
