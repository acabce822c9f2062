//! The per-object report: one JSON line per object, written as the run goes.

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::plan::{CopyReason, SkipReason};
use crate::transfer::VerifiedBy;

/// What happened to one object.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRecord {
    /// The key relative to the job's source (or, for deletions, destination) path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// What was done.
    pub action: Action,
    /// Why it was copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_reason: Option<CopyReason>,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    /// BLAKE3 of the source bytes, when they were read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_blake3: Option<String>,
    /// MD5 of the source bytes, when computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_md5: Option<String>,
    /// The destination's ETag after the upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_etag: Option<String>,
    /// BLAKE3 of the destination read back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_blake3: Option<String>,
    /// Which measure proved the copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<VerifiedBy>,
    /// The error, for failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Wall time spent on this object.
    pub duration_ms: u64,
}

impl ObjectRecord {
    /// A record with only the essentials set.
    pub fn new(path: &str, size: u64, action: Action) -> Self {
        Self {
            path: path.to_owned(),
            size,
            action,
            copy_reason: None,
            skip_reason: None,
            source_blake3: None,
            source_md5: None,
            destination_etag: None,
            destination_blake3: None,
            verified_by: None,
            error: None,
            attempts: 0,
            duration_ms: 0,
        }
    }
}

/// The action taken on an object.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Copied and verified.
    Copied,
    /// Left alone.
    Skipped,
    /// Could not be moved.
    Failed,
    /// Deleted from the destination (sync).
    Deleted,
    /// Moved to the trash path (sync).
    Trashed,
    /// Dry run: would be copied.
    WouldCopy,
    /// Dry run: would be deleted.
    WouldDelete,
}

/// Sends records to the report file without blocking transfers on disk writes.
#[derive(Clone)]
pub struct ReportSink {
    sender: Option<mpsc::Sender<ObjectRecord>>,
}

/// The task writing the report; await it to flush.
pub struct ReportWriter {
    task: Option<tokio::task::JoinHandle<Result<u64, std::io::Error>>>,
}

impl ReportSink {
    /// A sink that appends to `file` (or writes nowhere).
    pub fn open(file: Option<std::fs::File>) -> (Self, ReportWriter) {
        let Some(file) = file else {
            return (Self { sender: None }, ReportWriter { task: None });
        };
        let (sender, mut receiver) = mpsc::channel::<ObjectRecord>(1024);
        let task = tokio::spawn(async move {
            let mut out = tokio::io::BufWriter::new(tokio::fs::File::from_std(file));
            let mut written = 0;
            while let Some(record) = receiver.recv().await {
                let mut line = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
                line.push(b'\n');
                out.write_all(&line).await?;
                written += 1;
            }
            out.flush().await?;
            Ok(written)
        });
        (Self { sender: Some(sender) }, ReportWriter { task: Some(task) })
    }

    /// Records one object.
    pub async fn record(&self, record: ObjectRecord) {
        if let Some(sender) = &self.sender {
            let _ = sender.send(record).await;
        }
    }
}

impl ReportWriter {
    /// Waits until every record is on disk (all sinks must be dropped first) and returns how many.
    pub async fn finish(self) -> Result<u64, std::io::Error> {
        match self.task {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(0),
        }
    }
}
