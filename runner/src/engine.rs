//! One attempt of a job: walk both listings in key order, decide per object, copy and verify
//! with `transfers` objects in flight, then (sync) delete what the source no longer has.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ferry_api::contract::{DeletionVerdict, Outcome, PendingDeletions, Shard};
use ferry_api::reports::RESERVED_DIRECTORY;
use ferry_api::{MigrationJobSpec, Mode, Progress};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::accounting::Accounting;
use crate::deletion_gate::DeletionGate;
use crate::destination_path::{self, CaseFolded, Collisions, DriveNames};
use crate::extraneous::{Extraneous, ExtraneousLog};
use crate::filter::{FilterError, ObjectFilter};
use crate::listing::{self, ListError};
use crate::object::ObjectInfo;
use crate::plan::{self, CopyReason, Decision, Policy, SkipReason};
use crate::report::{Action, ObjectRecord, ReportSink};
use crate::safe_fs::SafeRoot;
use crate::storage::{Store, base_prefix};
use crate::transfer::{Failed, TransferError, Transfers};

/// What a run needs besides its stores.
pub struct Run {
    /// Moves and verifies single objects.
    pub transfers: Transfers,
    /// The job's spec.
    pub spec: MigrationJobSpec,
    /// This runner's share of the key space.
    pub shard: Shard,
    /// Decide and report, change nothing.
    pub dry_run: bool,
    /// Where a sync keeps its list of extraneous objects (the spool directory).
    pub scratch_directory: std::path::PathBuf,
    /// Who decides whether a sync may delete.
    pub deletion_gate: DeletionGate,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The outcome.
    pub outcome: Outcome,
    /// The final counters.
    pub progress: Progress,
    /// Dry run: objects that would be copied.
    pub would_copy: u64,
    /// Dry run: objects that would be deleted.
    pub would_delete: u64,
}

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The filter does not compile.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The list of extraneous objects cannot be kept.
    #[error("cannot keep the list of extraneous destination objects in {directory}: {source}")]
    Scratch {
        /// The directory.
        directory: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

struct Shared {
    transfers: Transfers,
    accounting: Arc<Accounting>,
    report: ReportSink,
    dry_run: bool,
    would_copy: AtomicU64,
}

/// Runs one attempt. `stop` turning true interrupts it cleanly.
pub async fn run(run: Run, accounting: Arc<Accounting>, report: ReportSink) -> Result<Summary, EngineError> {
    let filter = ObjectFilter::new(run.spec.filter.as_ref())?;
    let stop = run.transfers.stop.clone();
    let source = run.transfers.source.clone();
    let destination = run.transfers.destination.clone();
    let policy = Policy {
        conflict: run.spec.conflict,
        verify: run.spec.verify,
        source_local: source.capabilities.local,
        destination_local: destination.capabilities.local,
        part_size: run.transfers.part_size as u64,
        destination_whole_seconds: destination.capabilities.whole_second_times,
    };
    let shared = Arc::new(Shared {
        transfers: run.transfers,
        accounting: accounting.clone(),
        report: report.clone(),
        dry_run: run.dry_run,
        would_copy: AtomicU64::new(0),
    });
    let deleting = run.spec.mode == Mode::Sync && run.spec.delete_extraneous;
    let trash = run.spec.trash_path.as_deref().map(base_prefix);
    // Ferry's own directory (reports) is never copied, compared or deleted.
    let reserved = RESERVED_DIRECTORY.to_owned();
    let sources = listing::spawn(source.clone(), run.shard, vec![reserved.clone()]);
    let destinations =
        listing::spawn(destination.clone(), run.shard, [Some(reserved), trash.clone()].into_iter().flatten().collect());
    let extraneous = match deleting {
        true => Some(ExtraneousLog::create(&run.scratch_directory).map_err(|source| EngineError::Scratch {
            directory: run.scratch_directory.display().to_string(),
            source,
        })?),
        false => None,
    };
    let mut walk = Walk::new(sources, destinations, extraneous, run.spec.max_delete);

    let permits = Arc::new(Semaphore::new(run.spec.transfers.max(1) as usize));
    let backlog = Arc::new(Semaphore::new(FLUSH_BACKLOG));
    let mut tasks = JoinSet::new();
    let budget = run.spec.failure_budget;
    let mut stopped_early: Option<Outcome> = None;
    // Keys become paths only where the destination is a directory tree: only there are they checked.
    let mut paths = destination.capabilities.directory_tree.then(|| Paths {
        base: destination.base.clone(),
        collisions: Collisions::default(),
        drive: destination.capabilities.drive_names.map(|rules| (rules, CaseFolded::default())),
    });
    let mut listing = true;
    'walk: while listing {
        let ready = match walk.next(&filter).await {
            Some((object, existing)) => {
                accounting.listed(object.size);
                match &mut paths {
                    Some(paths) => paths.push(object, existing),
                    None => {
                        // Flat keys: only their length can be refused.
                        let limit = destination.capabilities.max_key;
                        let path = format!("{}{}", destination.base, object.key);
                        let refusal = limit
                            .and_then(|limit| limit.refuses(&path))
                            .map(|why| format!("key {:?} {why}", object.key));
                        vec![(object, existing, refusal)]
                    }
                }
            }
            None => {
                listing = false;
                paths.as_mut().map(Paths::finish).unwrap_or_default()
            }
        };
        for (object, existing, refusal) in ready {
            if *stop.borrow() {
                stopped_early = Some(Outcome::Interrupted);
                break 'walk;
            }
            if accounting.failures() > budget {
                stopped_early =
                    Some(Outcome::Aborted { reason: format!("more than failureBudget ({budget}) objects failed") });
                break 'walk;
            }
            if let Some(reason) = refusal {
                refuse(&shared, &object, reason).await;
                continue;
            }
            match plan::decide(&object, existing.as_ref(), &policy) {
                Decision::Skip(reason) => skip(&shared, &object, reason).await,
                decision => {
                    let Ok(queued) = backlog.clone().acquire_owned().await else { break 'walk };
                    let Ok(permit) = permits.clone().acquire_owned().await else { break 'walk };
                    let shared = shared.clone();
                    tasks.spawn(async move {
                        let _queued = queued;
                        handle(&shared, object, decision, permit).await;
                    });
                }
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    if let Some(durability) = &shared.transfers.durability {
        durability.hurry();
    }
    while tasks.join_next().await.is_some() {}

    let mut would_delete = 0;
    let outcome = if let Some(reason) = crate::backends::oauth::revoked() {
        // Whatever else failed, it failed because of this; no retry can help.
        Outcome::CredentialsRevoked { reason }
    } else if let Some(outcome) = stopped_early {
        outcome
    } else if *stop.borrow() {
        Outcome::Interrupted
    } else if let Some(error) = &walk.error {
        Outcome::Aborted { reason: error.to_string() }
    } else if accounting.failures() > budget {
        Outcome::Aborted { reason: format!("more than failureBudget ({budget}) objects failed") }
    } else if accounting.failures() > 0 {
        Outcome::ObjectsFailed
    } else if let Some(error) = &walk.scratch_error {
        Outcome::Aborted { reason: format!("cannot keep the list of extraneous destination objects: {error}") }
    } else if let Some(log) = walk.extraneous.take() {
        let pending = PendingDeletions { extraneous: walk.extraneous_seen, source_objects: walk.source_objects };
        match run.deletion_gate.verdict(pending, stop.clone()).await {
            None => Outcome::Interrupted,
            Some(DeletionVerdict::Refused { reason }) => Outcome::Aborted { reason },
            Some(DeletionVerdict::Granted) => {
                match delete_extraneous(&shared, log, &destination, trash.as_deref()).await {
                    Ok(count) => {
                        would_delete = if run.dry_run { count } else { 0 };
                        if accounting.failures() > 0 { Outcome::ObjectsFailed } else { Outcome::Succeeded }
                    }
                    Err(reason) => Outcome::Aborted { reason },
                }
            }
        }
    } else {
        Outcome::Succeeded
    };
    Ok(Summary {
        outcome,
        progress: accounting.snapshot(),
        would_copy: shared.would_copy.load(Ordering::Relaxed),
        would_delete,
    })
}

/// A source object and the destination's object at the same key, ready to be decided, with
/// the reason it must not be written when a destination that is a directory tree cannot hold it.
type Ready = (ObjectInfo, Option<ObjectInfo>, Option<String>);

/// The checks a key passes before it becomes a path at a filesystem destination.
struct Paths {
    base: String,
    collisions: Collisions<(ObjectInfo, Option<ObjectInfo>)>,
    /// A drive's name rules and the names seen, where names are compared without case.
    drive: Option<(DriveNames, CaseFolded)>,
}

impl Paths {
    /// Checks the next key in listing order; returns the objects now safe to decide.
    fn push(&mut self, object: ObjectInfo, existing: Option<ObjectInfo>) -> Vec<Ready> {
        if let Err(reason) = destination_path::check_key(&self.base, &object.key) {
            return vec![(object, existing, Some(reason))];
        }
        if let Some((rules, folded)) = &mut self.drive {
            let checked = rules.check(&object.key).and_then(|()| folded.check(&object.key));
            if let Err(reason) = checked {
                return vec![(object, existing, Some(reason))];
            }
        }
        let released = self.collisions.push(object.key.clone(), (object, existing));
        released.into_iter().map(|r| (r.item.0, r.item.1, r.collision)).collect()
    }

    /// The objects still held when the listing ends.
    fn finish(&mut self) -> Vec<Ready> {
        self.collisions.finish().into_iter().map(|r| (r.item.0, r.item.1, r.collision)).collect()
    }
}

/// Records an object the destination cannot hold: failed at once, never attempted.
async fn refuse(shared: &Shared, object: &ObjectInfo, reason: String) {
    tracing::error!(key = %object.key, %reason, "object refused");
    shared.accounting.failed(&object.key, &reason);
    let mut record = ObjectRecord::new(&object.key, object.size, Action::Failed);
    record.error = Some(reason);
    shared.report.record(record).await;
}

async fn skip(shared: &Shared, object: &ObjectInfo, reason: SkipReason) {
    shared.accounting.skipped(object.size, reason != SkipReason::DestinationNotOlder);
    let mut record = ObjectRecord::new(&object.key, object.size, Action::Skipped);
    record.skip_reason = Some(reason);
    shared.report.record(record).await;
}

/// Objects copied but waiting for their destination flush, at most, on top of `transfers`.
const FLUSH_BACKLOG: usize = 4096;

/// Decides, copies and records one object. `slot` is one of the `transfers` slots; it is
/// given up while the copy waits for its destination flush.
async fn handle(shared: &Shared, object: ObjectInfo, decision: Decision, slot: OwnedSemaphorePermit) {
    let started = Instant::now();
    let reason = match decision {
        Decision::Copy(reason) => reason,
        Decision::Skip(reason) => return skip(shared, &object, reason).await,
        Decision::CompareContent(check) => match shared.transfers.same_content(&object.key, &check).await {
            Ok(true) => return skip(shared, &object, SkipReason::SameContent).await,
            Ok(false) => CopyReason::Changed,
            Err(error) => {
                tracing::warn!(key = %object.key, %error, "could not compare content; copying");
                CopyReason::Unprovable
            }
        },
    };
    if shared.dry_run {
        shared.would_copy.fetch_add(1, Ordering::Relaxed);
        let mut record = ObjectRecord::new(&object.key, object.size, Action::WouldCopy);
        record.copy_reason = Some(reason);
        return shared.report.record(record).await;
    }
    let copied = shared.transfers.copy(&object).await;
    drop(slot);
    let copied = match copied {
        Ok(copied) => shared.transfers.make_durable(copied).await,
        Err(failed) => Err(failed),
    };
    let mut record = match copied {
        Ok(copied) => {
            shared.accounting.copied(object.size);
            let mut record = ObjectRecord::new(&object.key, object.size, Action::Copied);
            record.source_blake3 = copied.source.blake3;
            record.source_md5 = copied.source.md5.or(copied.source.multipart_etag);
            record.destination_etag = copied.destination_etag;
            record.destination_blake3 = copied.destination_blake3;
            record.verified_by = Some(copied.verified_by);
            record.attempts = copied.attempts;
            record
        }
        Err(Failed { error: TransferError::Interrupted, .. }) => return,
        Err(Failed { error, attempts }) => {
            let message = error.to_string();
            tracing::error!(key = %object.key, error = %message, "object failed");
            shared.accounting.failed(&object.key, &message);
            let mut record = ObjectRecord::new(&object.key, object.size, Action::Failed);
            record.error = Some(message);
            record.attempts = attempts;
            record
        }
    };
    record.copy_reason = Some(reason);
    record.duration_ms = started.elapsed().as_millis() as u64;
    shared.report.record(record).await;
}

/// Deletes (or moves to the trash path) every object in `log`, once the job-wide verdict
/// allowed it; reads the log back one object at a time.
async fn delete_extraneous(
    shared: &Shared,
    log: ExtraneousLog,
    destination: &Store,
    trash: Option<&str>,
) -> Result<u64, String> {
    let mut count = 0;
    let root = shared.transfers.destination_root.as_ref();
    let objects = log.into_objects().map_err(|error| format!("reading the extraneous-object list: {error}"))?;
    for object in objects {
        let Extraneous { key, size } =
            object.map_err(|error| format!("reading the extraneous-object list: {error}"))?;
        count += 1;
        let path = format!("{}{key}", destination.base);
        let trashed = trash.map(|trash| format!("{}{trash}{key}", destination.base));
        let (action, result) = if shared.dry_run {
            (Action::WouldDelete, Ok(()))
        } else if let Some(root) = root {
            // A filesystem destination: never through a link (OpenDAL's would follow one).
            let action = if trashed.is_some() { Action::Trashed } else { Action::Deleted };
            (action, remove_under_root(root.clone(), path, trashed).await)
        } else if let Some(trashed) = trashed {
            (Action::Trashed, move_to_trash(destination, &path, &trashed).await.map_err(|e| e.to_string()))
        } else {
            (Action::Deleted, destination.operator.delete(&path).await.map_err(|e| e.to_string()))
        };
        let mut record = ObjectRecord::new(&key, size, action);
        match result {
            Ok(()) if !shared.dry_run => shared.accounting.deleted(),
            Ok(()) => {}
            Err(error) => {
                shared.accounting.failed(&key, &error);
                record.action = Action::Failed;
                record.error = Some(format!("deleting failed: {error}"));
            }
        }
        shared.report.record(record).await;
    }
    Ok(count)
}

/// Deletes (or moves to `trashed`) the file at `path` under a filesystem destination's root.
async fn remove_under_root(root: Arc<SafeRoot>, path: String, trashed: Option<String>) -> Result<(), String> {
    let removed = tokio::task::spawn_blocking(move || match trashed {
        Some(trashed) => root.rename(&path, &trashed),
        None => root.remove_file(&path),
    })
    .await;
    match removed {
        Ok(result) => result.map_err(|error| error.to_string()),
        Err(error) => Err(error.to_string()),
    }
}

async fn move_to_trash(store: &Store, from: &str, to: &str) -> Result<(), opendal::Error> {
    if store.operator.info().capability().rename {
        return store.operator.rename(from, to).await;
    }
    store.operator.copy(from, to).await?;
    store.operator.delete(from).await
}

/// The merge of the source and destination listings, both in key order.
struct Walk {
    sources: mpsc::Receiver<Result<ObjectInfo, ListError>>,
    destinations: mpsc::Receiver<Result<ObjectInfo, ListError>>,
    pending: Option<ObjectInfo>,
    destinations_done: bool,
    /// The extraneous destination objects, on disk, when a sync deletes them.
    extraneous: Option<ExtraneousLog>,
    /// Past this many extraneous objects this shard alone exceeds `maxDelete`, so nothing
    /// will be deleted: they are counted, not kept.
    keep_limit: u64,
    extraneous_seen: u64,
    /// Objects the source listed, selected or not.
    source_objects: u64,
    error: Option<ListError>,
    scratch_error: Option<std::io::Error>,
}

impl Walk {
    fn new(
        sources: mpsc::Receiver<Result<ObjectInfo, ListError>>,
        destinations: mpsc::Receiver<Result<ObjectInfo, ListError>>,
        extraneous: Option<ExtraneousLog>,
        max_delete: Option<u64>,
    ) -> Self {
        Self {
            sources,
            destinations,
            pending: None,
            destinations_done: false,
            extraneous,
            keep_limit: max_delete.unwrap_or(u64::MAX),
            extraneous_seen: 0,
            source_objects: 0,
            error: None,
            scratch_error: None,
        }
    }

    /// The next selected source object and the destination object at the same key.
    async fn next(&mut self, filter: &ObjectFilter) -> Option<(ObjectInfo, Option<ObjectInfo>)> {
        loop {
            let source = match self.sources.recv().await {
                None => {
                    self.drain_destinations(filter, None).await;
                    return None;
                }
                Some(Err(error)) => {
                    self.error = Some(error);
                    return None;
                }
                Some(Ok(object)) => object,
            };
            self.source_objects += 1;
            let existing = self.drain_destinations(filter, Some(&source.key)).await;
            if self.error.is_some() {
                return None;
            }
            if filter.selected(&source) {
                return Some((source, existing));
            }
        }
    }

    /// Consumes destination objects up to `key` (all of them when `None`), collecting those the
    /// source lacks, and returns the one at `key`.
    async fn drain_destinations(&mut self, filter: &ObjectFilter, key: Option<&str>) -> Option<ObjectInfo> {
        loop {
            if self.pending.is_none() && !self.destinations_done {
                match self.destinations.recv().await {
                    None => self.destinations_done = true,
                    Some(Err(error)) => {
                        self.error = Some(error);
                        self.destinations_done = true;
                    }
                    Some(Ok(object)) => self.pending = Some(object),
                }
            }
            let pending = self.pending.take()?;
            match key.map(|key| pending.key.as_str().cmp(key)) {
                Some(std::cmp::Ordering::Equal) => return Some(pending),
                Some(std::cmp::Ordering::Greater) => {
                    self.pending = Some(pending);
                    return None;
                }
                _ => self.extraneous(filter, pending),
            }
        }
    }

    fn extraneous(&mut self, filter: &ObjectFilter, object: ObjectInfo) {
        let Some(log) = self.extraneous.as_mut() else { return };
        if !filter.path_selected(&object.key) {
            return;
        }
        self.extraneous_seen += 1;
        if self.extraneous_seen <= self.keep_limit
            && self.scratch_error.is_none()
            && let Err(error) = log.push(&Extraneous { key: object.key, size: object.size })
        {
            self.scratch_error = Some(error);
        }
    }
}
