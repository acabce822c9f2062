//! Who decides whether a sync may delete what it found extraneous. The rules hold for the
//! whole job (`ferry_api::contract::deletion_verdict`): in a cluster the operator sees every
//! shard and answers; a local run applies them to its own counts.

use std::time::Duration;

use ferry_api::contract::{DeletionVerdict, PendingDeletions, ProgressReport, Shard, Stage, deletion_verdict};
use ferry_api::status::Progress;
use futures::future::BoxFuture;
use tokio::sync::watch;

/// How often a shard asks the operator while other shards are still copying.
const ASK_EVERY: Duration = Duration::from_secs(2);

/// Asks the operator for the job-wide verdict with this shard's counts: `Ok(None)` while
/// other shards are still copying, `Err` when the operator could not be asked this time.
pub type AskOperator =
    Box<dyn Fn(PendingDeletions) -> BoxFuture<'static, Result<Option<DeletionVerdict>, String>> + Send + Sync>;

/// Where the deletion verdict comes from.
pub enum DeletionGate {
    /// This process alone: the job's rules over its own counts. A local run of one shard of
    /// several cannot see the others, so it gets its share of `maxDelete` (see [`share`]).
    Local {
        /// The job's `spec.maxDelete`.
        max_delete: Option<u64>,
        /// This run's shard.
        shard: Shard,
    },
    /// The operator, which sees every shard of the attempt.
    Operator(AskOperator),
}

/// Shard `shard`'s part of a job-wide limit, so the parts never add up to more than it.
pub fn share(limit: u64, shard: Shard) -> u64 {
    let count = u64::from(shard.count.max(1));
    limit / count + u64::from(u64::from(shard.index) < limit % count)
}

impl DeletionGate {
    /// The verdict for `pending`; `None` when `stop` turned true while waiting.
    pub async fn verdict(&self, pending: PendingDeletions, mut stop: watch::Receiver<bool>) -> Option<DeletionVerdict> {
        match self {
            Self::Local { max_delete, shard } => {
                let report = counted(pending);
                let limit = max_delete.map(|limit| share(limit, *shard));
                deletion_verdict(limit, 1, [&report])
            }
            Self::Operator(ask) => loop {
                match ask(pending).await {
                    Ok(Some(verdict)) => return Some(verdict),
                    Ok(None) => tracing::debug!("waiting for the other shards before deleting"),
                    Err(error) => tracing::warn!(%error, "cannot ask the operator for the deletion verdict; retrying"),
                }
                tokio::select! {
                    () = tokio::time::sleep(ASK_EVERY) => {}
                    _ = stop.wait_for(|stopped| *stopped) => return None,
                }
            },
        }
    }
}

/// A report carrying nothing but `pending`, for the local verdict.
fn counted(pending: PendingDeletions) -> ProgressReport {
    ProgressReport {
        job_uid: String::new(),
        attempt: 0,
        shard: Shard::WHOLE,
        sequence: 0,
        stage: Stage::AwaitingDeletion,
        progress: Progress::default(),
        recent_failures: Vec::new(),
        outcome: None,
        deletions: Some(pending),
        report_objects: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_never_add_up_to_more_than_the_limit() {
        for (limit, count) in [(10, 4), (3, 4), (0, 2), (1000, 256), (7, 1)] {
            let shares: Vec<u64> = (0..count).map(|index| share(limit, Shard { index, count })).collect();
            assert_eq!(shares.iter().sum::<u64>(), limit, "{limit} over {count}: {shares:?}");
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
        }
    }

    #[tokio::test]
    async fn a_local_run_applies_the_rules_to_its_own_counts() {
        let (_keep, stop) = watch::channel(false);
        let gate = DeletionGate::Local { max_delete: Some(10), shard: Shard { index: 0, count: 4 } };
        let within = PendingDeletions { extraneous: 3, source_objects: 1 };
        assert_eq!(gate.verdict(within, stop.clone()).await, Some(DeletionVerdict::Granted));
        let beyond_share = PendingDeletions { extraneous: 4, source_objects: 1 };
        assert!(matches!(gate.verdict(beyond_share, stop.clone()).await, Some(DeletionVerdict::Refused { .. })));
        let empty_source = PendingDeletions { extraneous: 1, source_objects: 0 };
        assert!(matches!(gate.verdict(empty_source, stop).await, Some(DeletionVerdict::Refused { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_asks_the_operator_until_every_shard_counted() {
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = asked.clone();
        let gate = DeletionGate::Operator(Box::new(move |_| {
            let round = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                match round {
                    0 => Err("connection refused".to_owned()),
                    1 => Ok(None),
                    _ => Ok(Some(DeletionVerdict::Granted)),
                }
            })
        }));
        let (_keep, stop) = watch::channel(false);
        let pending = PendingDeletions { extraneous: 1, source_objects: 1 };
        assert_eq!(gate.verdict(pending, stop).await, Some(DeletionVerdict::Granted));
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait() {
        let gate = DeletionGate::Operator(Box::new(|_| Box::pin(async { Ok(None) })));
        let (stopper, stop) = watch::channel(false);
        let waiting = tokio::spawn(async move { gate.verdict(PendingDeletions::default(), stop).await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        stopper.send(true).unwrap();
        assert_eq!(waiting.await.unwrap(), None);
    }
}
