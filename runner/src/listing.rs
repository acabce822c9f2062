//! Listing a store as a stream of objects in byte order of their keys, with memory bounded
//! by one directory (filesystems) or one page (object stores), never by the whole tree.

use std::sync::Arc;

use ferry_api::contract::Shard;
use futures::TryStreamExt;
use opendal::{EntryMode, Metadata};
use tokio::sync::mpsc;

use crate::object::{ObjectInfo, unquote};
use crate::shard;
use crate::storage::{PARTIAL_DIRECTORY, Store};

/// A listing failed part-way: the engine must not decide anything (least of all deletions)
/// on what it has seen so far.
#[derive(Clone, Debug, thiserror::Error)]
#[error("listing {binding} at {path:?} failed: {reason}")]
pub struct ListError {
    /// The binding.
    pub binding: String,
    /// The directory or prefix being listed.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// Objects buffered between the lister and the engine.
const CHANNEL_DEPTH: usize = 1024;

/// Starts listing `store` under its base path and returns the objects in key order. Keys
/// under `skip` (relative to the base) are left out; only `shard`'s keys are returned.
pub fn spawn(store: Arc<Store>, shard: Shard, skip: Option<String>) -> mpsc::Receiver<Result<ObjectInfo, ListError>> {
    let (sender, receiver) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(async move {
        let keep =
            |key: &str| !skip.as_deref().is_some_and(|prefix| key.starts_with(prefix)) && shard::owns(shard, key);
        let result = if store.traits.sorted_listing {
            flat(&store, &sender, &keep).await
        } else {
            walk(&store, &sender, &keep).await
        };
        if let Err(error) = result {
            let _ = sender.send(Err(error)).await;
        }
    });
    receiver
}

type Sender = mpsc::Sender<Result<ObjectInfo, ListError>>;

fn failure(store: &Store, path: &str, error: opendal::Error) -> ListError {
    ListError { binding: store.binding.clone(), path: path.to_owned(), reason: error.to_string() }
}

fn object(key: String, metadata: &Metadata) -> ObjectInfo {
    ObjectInfo {
        key,
        size: metadata.content_length(),
        modified: metadata.last_modified().map(|t| t.into_inner()),
        etag: metadata.etag().map(unquote),
    }
}

/// Object stores: one recursive listing, already in key order.
async fn flat(store: &Store, sender: &Sender, keep: &impl Fn(&str) -> bool) -> Result<(), ListError> {
    let base = store.base.as_str();
    let mut lister = store.operator.lister_with(base).recursive(true).await.map_err(|e| failure(store, base, e))?;
    while let Some(entry) = lister.try_next().await.map_err(|e| failure(store, base, e))? {
        let (path, metadata) = entry.into_parts();
        if metadata.mode() == EntryMode::DIR || path.ends_with('/') {
            continue;
        }
        let Some(key) = path.strip_prefix(base) else { continue };
        if key.is_empty() || !keep(key) {
            continue;
        }
        if sender.send(Ok(object(key.to_owned(), &metadata))).await.is_err() {
            return Ok(()); // the engine stopped listening
        }
    }
    Ok(())
}

/// Filesystems: a depth-first walk, each directory sorted so the whole walk is in key order
/// (a directory sorts as `name/`, exactly where its keys fall among its siblings).
async fn walk(store: &Store, sender: &Sender, keep: &impl Fn(&str) -> bool) -> Result<(), ListError> {
    let base = store.base.clone();
    let mut stack = vec![list_directory(store, &base).await?];
    while let Some(level) = stack.last_mut() {
        let Some((path, metadata)) = level.pop() else {
            stack.pop();
            continue;
        };
        if path == PARTIAL_DIRECTORY {
            continue;
        }
        if path.ends_with('/') {
            stack.push(list_directory(store, &path).await?);
            continue;
        }
        let key = path.strip_prefix(base.as_str()).unwrap_or(&path);
        if keep(key) && sender.send(Ok(object(key.to_owned(), &metadata))).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// One directory's entries, sorted in reverse so `pop` yields them in order. A directory that
/// does not exist is empty (a destination that has not been written yet).
async fn list_directory(store: &Store, directory: &str) -> Result<Vec<(String, Metadata)>, ListError> {
    let mut entries = Vec::new();
    let mut lister = match store.operator.lister(directory).await {
        Ok(lister) => lister,
        Err(error) if error.kind() == opendal::ErrorKind::NotFound => return Ok(entries),
        Err(error) => return Err(failure(store, directory, error)),
    };
    while let Some(entry) = lister.try_next().await.map_err(|e| failure(store, directory, e))? {
        let (path, metadata) = entry.into_parts();
        if path == directory || path == "/" {
            continue;
        }
        entries.push((path, metadata));
    }
    entries.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    Ok(entries)
}
