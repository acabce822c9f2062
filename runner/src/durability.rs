//! Group commit for a local destination. A small file counts as verified only once it is
//! durable; one `fsync` per file makes the journal commit once per file, which costs more
//! than copying it. Instead, writers join a batch and wait: one `syncfs` of the
//! destination's filesystem, started after the batch closed, covers every file in it.
//!
//! A batch stays open for a short gathering window (or until it is full) even when the disk
//! is idle: a `syncfs` costs a journal commit and a cache flush however little it writes, and
//! flushing as soon as one file was waiting made 20,000 small files cost ~2,300 of them.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// How long a batch gathers writers before its flush starts.
const GATHERING: Duration = Duration::from_millis(50);

/// A batch this large is flushed without waiting out the gathering window.
const FULL_BATCH: usize = 2048;

/// Flushes of one filesystem, shared by all transfers of a run.
#[derive(Clone)]
pub struct Durability {
    inner: Arc<Inner>,
}

struct Inner {
    /// Any open file of the filesystem: `syncfs` flushes the one it lives on.
    anchor: std::fs::File,
    /// The batch new writers join.
    open: Mutex<Batch>,
    /// Wakes the gathering flush early when its batch is full.
    full: Notify,
    /// No more writers are coming but those in flight: flush without gathering.
    hurrying: AtomicBool,
    /// Held while a batch is closed and flushed: one `syncfs` at a time.
    flushing: tokio::sync::Mutex<()>,
    /// The newest flush that finished, and whether every flush so far succeeded.
    finished: watch::Sender<Finished>,
}

/// The open batch: its number and how many writers joined it. The first writer to join
/// schedules its flush.
#[derive(Debug)]
struct Batch {
    number: u64,
    writers: usize,
}

#[derive(Clone, Debug, Default)]
struct Finished {
    number: u64,
    /// The newest flush that failed, and why: writes before it may not be durable.
    last_failure: Option<(u64, Arc<str>)>,
}

impl Durability {
    /// Flushes for the filesystem holding `directory` (created if missing). `None` where the
    /// platform has no `syncfs`: callers then sync each file themselves.
    pub fn for_directory(directory: &Path) -> std::io::Result<Option<Self>> {
        if !cfg!(target_os = "linux") {
            return Ok(None);
        }
        std::fs::create_dir_all(directory)?;
        let anchor = std::fs::File::open(directory)?;
        let (finished, _) = watch::channel(Finished::default());
        let open = Mutex::new(Batch { number: 1, writers: 0 });
        let flushing = tokio::sync::Mutex::new(());
        Ok(Some(Self {
            inner: Arc::new(Inner {
                anchor,
                open,
                full: Notify::new(),
                hurrying: AtomicBool::new(false),
                flushing,
                finished,
            }),
        }))
    }

    /// Returns once everything this task wrote before the call is durable.
    pub async fn wait(&self) -> std::io::Result<()> {
        let mut finished = self.inner.finished.subscribe();
        let (wanted, schedule, full) = {
            let mut batch = self.inner.open.lock().unwrap_or_else(PoisonError::into_inner);
            batch.writers += 1;
            (batch.number, batch.writers == 1, batch.writers == FULL_BATCH)
        };
        if schedule {
            self.schedule_flush();
        }
        if full {
            self.inner.full.notify_one();
        }
        loop {
            let state = finished.borrow_and_update().clone();
            // Any flush numbered at least ours started after our batch closed, so after our
            // write.
            if state.number >= wanted {
                return match state.last_failure {
                    Some((failed, reason)) if failed >= wanted => {
                        Err(std::io::Error::other(format!("syncing the destination filesystem failed: {reason}")))
                    }
                    _ => Ok(()),
                };
            }
            if finished.changed().await.is_err() {
                return Err(std::io::Error::other("the destination flusher stopped"));
            }
        }
    }

    /// Stops gathering: the run has handed out its last object, so waiting for more writers
    /// would only delay the end.
    pub fn hurry(&self) {
        self.inner.hurrying.store(true, Ordering::Relaxed);
        self.inner.full.notify_one();
    }

    /// Flushes the open batch on its own task, so a waiter that goes away cannot strand the
    /// others: after the gathering window, or sooner when the batch fills, and never while
    /// the previous flush still runs (writers keep joining meanwhile).
    fn schedule_flush(&self) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if !inner.hurrying.load(Ordering::Relaxed) {
                let _ = tokio::time::timeout(GATHERING, inner.full.notified()).await;
            }
            let _flushing = inner.flushing.lock().await;
            let number = {
                let mut batch = inner.open.lock().unwrap_or_else(PoisonError::into_inner);
                let number = batch.number;
                *batch = Batch { number: number + 1, writers: 0 };
                number
            };
            let anchor = inner.clone();
            let result = tokio::task::spawn_blocking(move || sync_filesystem(&anchor.anchor)).await;
            let failure = match result {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(error) => Some(error.to_string()),
            };
            if let Some(reason) = &failure {
                tracing::error!(%reason, "syncing the destination filesystem failed");
            }
            inner.finished.send_modify(|state| {
                state.number = number;
                if let Some(reason) = failure {
                    state.last_failure = Some((number, reason.into()));
                }
            });
        });
    }
}

#[cfg(target_os = "linux")]
fn sync_filesystem(anchor: &std::fs::File) -> std::io::Result<()> {
    rustix::fs::syncfs(anchor).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn sync_filesystem(anchor: &std::fs::File) -> std::io::Result<()> {
    anchor.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flushes(durability: &Durability) -> u64 {
        durability.inner.finished.borrow().number
    }

    async fn write_and_wait(durability: &Durability, directory: &Path, writers: usize) {
        let mut waiting = tokio::task::JoinSet::new();
        for i in 0..writers {
            let (durability, path) = (durability.clone(), directory.join(format!("out/{i}")));
            waiting.spawn(async move {
                std::fs::write(path, b"x").unwrap();
                durability.wait().await
            });
        }
        while let Some(result) = waiting.join_next().await {
            result.unwrap().unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_all_return_and_share_flushes() {
        let directory = tempfile::tempdir().unwrap();
        let Some(durability) = Durability::for_directory(&directory.path().join("out")).unwrap() else { return };
        write_and_wait(&durability, directory.path(), 64).await;
        let done = flushes(&durability);
        assert!((1..=64).contains(&done), "{done} flushes");
        // A later writer gets a flush of its own, started after its call.
        durability.wait().await.unwrap();
        assert_eq!(flushes(&durability), done + 1);
    }

    // Paused time: the clock moves only when every task waits, so "within the window" is
    // exact rather than a race with a slow machine.
    #[tokio::test(start_paused = true)]
    async fn a_batch_gathers_for_its_window_unless_it_is_full_or_hurried() {
        let directory = tempfile::tempdir().unwrap();
        let Some(durability) = Durability::for_directory(&directory.path().join("out")).unwrap() else { return };

        let started = tokio::time::Instant::now();
        write_and_wait(&durability, directory.path(), 64).await;
        assert_eq!(flushes(&durability), 1, "64 writers arriving together share one flush");
        assert!(started.elapsed() >= GATHERING);

        let started = tokio::time::Instant::now();
        write_and_wait(&durability, directory.path(), FULL_BATCH).await;
        assert!(started.elapsed() < GATHERING, "a full batch does not wait out the window");
        assert_eq!(flushes(&durability), 2);

        durability.hurry();
        let started = tokio::time::Instant::now();
        write_and_wait(&durability, directory.path(), 1).await;
        assert!(started.elapsed() < GATHERING, "a hurried batch does not wait out the window");
        assert_eq!(flushes(&durability), 3);
    }
}
