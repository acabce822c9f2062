//! Cumulative counters of a run, readable at any moment as a [`Progress`] snapshot.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ferry_api::{ObjectFailure, Progress};

/// How many failures a progress report carries: the run's first ones, which are the ones worth
/// reading (later failures are often the same cause repeated, and the first ones never scroll
/// away while the run goes on).
const FIRST_FAILURES: usize = 10;

/// Counters shared by every task of a run.
#[derive(Debug)]
pub struct Accounting {
    objects_total: AtomicU64,
    objects_copied: AtomicU64,
    objects_verified: AtomicU64,
    objects_skipped: AtomicU64,
    objects_failed: AtomicU64,
    objects_deleted: AtomicU64,
    bytes_total: AtomicU64,
    bytes_copied: AtomicU64,
    bytes_verified: AtomicU64,
    first_failures: Mutex<Vec<ObjectFailure>>,
    started: Instant,
    rate: Mutex<RateWindow>,
}

#[derive(Debug)]
struct RateWindow {
    at: Instant,
    bytes: u64,
    per_second: u64,
}

impl Default for Accounting {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            objects_total: AtomicU64::new(0),
            objects_copied: AtomicU64::new(0),
            objects_verified: AtomicU64::new(0),
            objects_skipped: AtomicU64::new(0),
            objects_failed: AtomicU64::new(0),
            objects_deleted: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_copied: AtomicU64::new(0),
            bytes_verified: AtomicU64::new(0),
            first_failures: Mutex::new(Vec::new()),
            started: now,
            rate: Mutex::new(RateWindow { at: now, bytes: 0, per_second: 0 }),
        }
    }
}

fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

impl Accounting {
    /// A selected source object was listed.
    pub fn listed(&self, bytes: u64) {
        add(&self.objects_total, 1);
        add(&self.bytes_total, bytes);
    }

    /// An object was copied and verified.
    pub fn copied(&self, bytes: u64) {
        add(&self.objects_copied, 1);
        add(&self.bytes_copied, bytes);
        add(&self.objects_verified, 1);
        add(&self.bytes_verified, bytes);
    }

    /// An object was skipped; `identical` when it was proven identical (so it counts as verified).
    pub fn skipped(&self, bytes: u64, identical: bool) {
        add(&self.objects_skipped, 1);
        if identical {
            add(&self.objects_verified, 1);
            add(&self.bytes_verified, bytes);
        }
    }

    /// An object failed after every retry.
    pub fn failed(&self, path: &str, reason: &str) {
        add(&self.objects_failed, 1);
        if let Ok(mut first) = self.first_failures.lock()
            && first.len() < FIRST_FAILURES
        {
            first.push(ObjectFailure { path: path.to_owned(), reason: reason.to_owned() });
        }
    }

    /// A destination object was deleted (or moved to the trash path).
    pub fn deleted(&self) {
        add(&self.objects_deleted, 1);
    }

    /// Failed objects so far.
    pub fn failures(&self) -> u64 {
        self.objects_failed.load(Ordering::Relaxed)
    }

    /// The run's first failures (at most ten).
    pub fn first_failures(&self) -> Vec<ObjectFailure> {
        self.first_failures.lock().map(|first| first.clone()).unwrap_or_default()
    }

    /// Seconds since the run started.
    pub fn elapsed_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The counters now, with throughput over the last few seconds and an ETA.
    pub fn snapshot(&self) -> Progress {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut progress = Progress {
            objects_total: load(&self.objects_total),
            objects_copied: load(&self.objects_copied),
            objects_verified: load(&self.objects_verified),
            objects_skipped: load(&self.objects_skipped),
            objects_failed: load(&self.objects_failed),
            objects_deleted: load(&self.objects_deleted),
            bytes_total: load(&self.bytes_total),
            bytes_copied: load(&self.bytes_copied),
            bytes_verified: load(&self.bytes_verified),
            bytes_per_second: 0,
            eta_seconds: None,
        };
        if let Ok(mut window) = self.rate.lock() {
            let elapsed = window.at.elapsed().as_secs_f64();
            if elapsed >= 1.0 {
                let instant = (progress.bytes_verified.saturating_sub(window.bytes)) as f64 / elapsed;
                // Smooth so one slow second does not swing the ETA.
                window.per_second = if window.per_second == 0 {
                    instant as u64
                } else {
                    ((window.per_second as f64) * 0.7 + instant * 0.3) as u64
                };
                window.at = Instant::now();
                window.bytes = progress.bytes_verified;
            }
            progress.bytes_per_second = window.per_second;
        }
        let remaining = progress.bytes_total.saturating_sub(progress.bytes_verified);
        progress.eta_seconds = remaining.checked_div(progress.bytes_per_second);
        progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_identical_objects_count_as_verified() {
        let accounting = Accounting::default();
        accounting.listed(10);
        accounting.listed(20);
        accounting.listed(5);
        accounting.copied(10);
        accounting.skipped(20, true);
        accounting.failed("c", "boom");
        let progress = accounting.snapshot();
        assert_eq!((progress.objects_total, progress.objects_verified, progress.objects_failed), (3, 2, 1));
        assert_eq!((progress.bytes_total, progress.bytes_verified, progress.bytes_copied), (35, 30, 10));
        assert_eq!(accounting.first_failures()[0].path, "c");
    }

    #[test]
    fn the_first_failures_are_kept_not_the_latest() {
        let accounting = Accounting::default();
        for index in 0..25 {
            accounting.failed(&format!("f{index}"), "denied");
        }
        let kept: Vec<String> = accounting.first_failures().into_iter().map(|f| f.path).collect();
        assert_eq!(kept, (0..10).map(|i| format!("f{i}")).collect::<Vec<_>>());
        assert_eq!(accounting.failures(), 25);
    }
}
