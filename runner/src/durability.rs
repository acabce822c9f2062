//! Group commit for a local destination. A small file counts as verified only once it is
//! durable; one `fsync` per file makes the journal commit once per file, which costs more
//! than copying it. Instead, writers ask for a flush and wait: one `syncfs` of the
//! destination's filesystem, started after their write, covers every file written so far.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{Mutex, watch};

/// Flushes of one filesystem, shared by all transfers of a run.
#[derive(Clone)]
pub struct Durability {
    inner: Arc<Inner>,
}

struct Inner {
    /// Any open file of the filesystem: `syncfs` flushes the one it lives on.
    anchor: std::fs::File,
    /// The number of the flush a new writer must wait for; held while a flush starts.
    next: Mutex<u64>,
    /// The last flush finished, and whether every flush so far succeeded.
    finished: watch::Sender<Finished>,
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
        Ok(Some(Self { inner: Arc::new(Inner { anchor, next: Mutex::new(1), finished }) }))
    }

    /// Returns once everything this task wrote before the call is durable.
    ///
    /// Whoever finds no flush running starts one; whoever arrives during a flush waits for
    /// the next, because the running one may have missed their write. So a flush covers all
    /// writers that queued up while the previous one ran.
    pub async fn wait(&self) -> std::io::Result<()> {
        let mut finished = self.inner.finished.subscribe();
        let wanted = {
            let mut next = self.inner.next.lock().await;
            let wanted = *next;
            if finished.borrow().number + 1 == wanted {
                // No flush is running: start the one we need.
                *next += 1;
                self.start_flush(wanted);
            }
            wanted
        };
        loop {
            let state = finished.borrow_and_update().clone();
            if state.number >= wanted {
                return match state.last_failure {
                    Some((failed, reason)) if failed >= wanted => {
                        Err(std::io::Error::other(format!("syncing the destination filesystem failed: {reason}")))
                    }
                    _ => Ok(()),
                };
            }
            if state.number + 1 == wanted {
                // The flush before ours finished; start ours unless another waiter did.
                let mut next = self.inner.next.lock().await;
                if *next == wanted {
                    *next += 1;
                    self.start_flush(wanted);
                }
            }
            if finished.changed().await.is_err() {
                return Err(std::io::Error::other("the destination flusher stopped"));
            }
        }
    }

    /// Runs flush `number` on its own task, so a waiter that goes away cannot strand the
    /// others.
    fn start_flush(&self, number: u64) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_all_return_and_share_flushes() {
        let directory = tempfile::tempdir().unwrap();
        let Some(durability) = Durability::for_directory(&directory.path().join("out")).unwrap() else { return };
        let mut writers = tokio::task::JoinSet::new();
        for i in 0..64 {
            let (durability, path) = (durability.clone(), directory.path().join(format!("out/{i}")));
            writers.spawn(async move {
                std::fs::write(path, b"x").unwrap();
                durability.wait().await
            });
        }
        while let Some(result) = writers.join_next().await {
            result.unwrap().unwrap();
        }
        let flushes = durability.inner.finished.borrow().number;
        assert!((1..=64).contains(&flushes), "{flushes} flushes");
        // A later writer gets a flush of its own, started after its call.
        durability.wait().await.unwrap();
        assert_eq!(durability.inner.finished.borrow().number, flushes + 1);
    }
}
