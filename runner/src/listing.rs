//! Listing a store as a stream of objects in byte order of their keys, with memory bounded
//! by one directory (filesystems) or one page (object stores), never by the whole tree.

use std::sync::Arc;

use ferry_api::contract::Shard;
use futures::TryStreamExt;
use opendal::{EntryMode, Metadata};
use rustix::fs::FileType;
use tokio::sync::mpsc;

use crate::object::{ObjectInfo, reported_checksum};
use crate::safe_fs::{SafeFsError, SafeRoot};
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

/// Most top-level entries an object store's shard listing holds in memory before it falls
/// back to listing everything and keeping its own keys by hash.
const TOP_LEVEL_LIMIT: usize = 100_000;

/// Starts listing `store` under its base path and returns the objects in key order. Keys
/// under any prefix in `skip` (relative to the base) are left out; only `shard`'s keys are returned, and
/// a shard lists only its own top-level directories wherever the backend allows.
pub fn spawn(store: Arc<Store>, shard: Shard, skip: Vec<String>) -> mpsc::Receiver<Result<ObjectInfo, ListError>> {
    let (sender, receiver) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(async move {
        // Works for object keys and for top-level directory keys (`name/`) alike.
        let keep = |key: &str| !skip.iter().any(|prefix| key.starts_with(prefix)) && shard::owns(shard, key);
        let result = if !store.capabilities.sorted_listing {
            walk(&store, &sender, &keep).await
        } else if shard.count > 1 {
            by_top_level(&store, &sender, &keep).await
        } else {
            flat(&store, &sender, &keep, &store.base).await
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

fn object(store: &Store, key: String, metadata: &Metadata) -> ObjectInfo {
    ObjectInfo {
        key,
        size: metadata.content_length(),
        modified: metadata.last_modified().map(|t| t.into_inner()),
        checksum: reported_checksum(metadata, store.capabilities.checksum),
    }
}

/// Object stores: one recursive listing under `prefix`, already in key order.
async fn flat(store: &Store, sender: &Sender, keep: &impl Fn(&str) -> bool, prefix: &str) -> Result<bool, ListError> {
    let base = store.base.as_str();
    let mut lister = store.operator.lister_with(prefix).recursive(true).await.map_err(|e| failure(store, prefix, e))?;
    while let Some(entry) = lister.try_next().await.map_err(|e| failure(store, prefix, e))? {
        let (path, metadata) = entry.into_parts();
        if metadata.mode() == EntryMode::DIR || path.ends_with('/') {
            continue;
        }
        let Some(key) = path.strip_prefix(base) else { continue };
        if key.is_empty() || !keep(key) {
            continue;
        }
        if sender.send(Ok(object(store, key.to_owned(), &metadata))).await.is_err() {
            return Ok(false); // the engine stopped listening
        }
    }
    Ok(true)
}

/// Object stores, sharded: list the top level once, then only this shard's directories, so
/// N shards do not each list the whole bucket. A top level too large to hold falls back to
/// one full listing filtered by hash.
async fn by_top_level(store: &Store, sender: &Sender, keep: &impl Fn(&str) -> bool) -> Result<bool, ListError> {
    let base = store.base.as_str();
    let mut top = Vec::new();
    let mut lister = store.operator.lister(base).await.map_err(|e| failure(store, base, e))?;
    while let Some(entry) = lister.try_next().await.map_err(|e| failure(store, base, e))? {
        if top.len() == TOP_LEVEL_LIMIT {
            return flat(store, sender, keep, base).await;
        }
        let (path, metadata) = entry.into_parts();
        if path != base && path != "/" {
            top.push((path, metadata));
        }
    }
    top.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (path, metadata) in top {
        let key = path.strip_prefix(base).unwrap_or(&path);
        if key.is_empty() || !keep(key) {
            continue;
        }
        let more = if path.ends_with('/') {
            flat(store, sender, keep, &path).await?
        } else {
            sender.send(Ok(object(store, key.to_owned(), &metadata))).await.is_ok()
        };
        if !more {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Filesystems: a depth-first walk, each directory sorted so the whole walk is in key order
/// (a directory sorts as `name/`, exactly where its keys fall among its siblings).
async fn walk(store: &Store, sender: &Sender, keep: &impl Fn(&str) -> bool) -> Result<bool, ListError> {
    let base = store.base.clone();
    let mut stack = vec![list_directory(store, &base).await?];
    while let Some(level) = stack.last_mut() {
        let Some(entry) = level.pop() else {
            stack.pop();
            continue;
        };
        // Entries carry the store path as their key until they are sent.
        let path = entry.key.as_str();
        if path == PARTIAL_DIRECTORY {
            continue;
        }
        let key = path.strip_prefix(base.as_str()).unwrap_or(path);
        if path.ends_with('/') {
            // A top-level directory of another shard (or the trash) is never walked.
            let top_level = stack.len() == 1;
            if !top_level || keep(key) {
                stack.push(list_directory(store, path).await?);
            }
            continue;
        }
        if keep(key) && sender.send(Ok(ObjectInfo { key: key.to_owned(), ..entry })).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One directory's entries, keyed by their store path (a subdirectory's ends in `/`), sorted
/// in reverse so `pop` yields them in order. A directory that does not exist is empty (a
/// destination that has not been written yet).
async fn list_directory(store: &Store, directory: &str) -> Result<Vec<ObjectInfo>, ListError> {
    let mut entries = match &store.local_root {
        Some(root) => {
            let local_failure =
                |reason: String| ListError { binding: store.binding.clone(), path: directory.to_owned(), reason };
            let (root, path) = (root.clone(), directory.to_owned());
            tokio::task::spawn_blocking(move || read_local_directory(&root, &path))
                .await
                .map_err(|error| local_failure(error.to_string()))?
                .map_err(|error| local_failure(error.to_string()))?
        }
        None => list_remote_directory(store, directory).await?,
    };
    entries.sort_unstable_by(|a, b| b.key.cmp(&a.key));
    Ok(entries)
}

async fn list_remote_directory(store: &Store, directory: &str) -> Result<Vec<ObjectInfo>, ListError> {
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
        entries.push(object(store, path, &metadata));
    }
    Ok(entries)
}

/// A local directory in one blocking call: OpenDAL's lister makes one hop to a blocking
/// thread per entry (for its metadata), which dominates listing many small files.
/// Symbolic links and special files are skipped, as rclone does by default: following them
/// could leave the tree or loop. The directory itself is reached through `safe_fs`, so a
/// link swapped in for it (or for the job's path) is not followed either.
fn read_local_directory(root: &std::path::Path, directory: &str) -> std::io::Result<Vec<ObjectInfo>> {
    let mut entries = Vec::new();
    let root = match SafeRoot::open_existing(root) {
        Ok(root) => root,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(entries),
        Err(error) => return Err(error),
    };
    let listed = root.read_directory(directory).map_err(|error| match error {
        SafeFsError::Io(error) => error,
        refused => std::io::Error::other(refused),
    })?;
    for entry in listed {
        let Ok(name) = entry.name.to_str() else {
            tracing::warn!(directory, name = ?entry.name, "skipping a file name that is not UTF-8");
            continue;
        };
        let key = match entry.kind {
            FileType::Directory => format!("{directory}{name}/"),
            FileType::RegularFile => format!("{directory}{name}"),
            _ => {
                tracing::warn!(directory, name, "skipping a symbolic link or special file");
                continue;
            }
        };
        let modified = jiff::Timestamp::new(entry.modified.0, entry.modified.1).ok();
        entries.push(ObjectInfo { key, size: entry.size, modified, checksum: None });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_directories_list_files_and_subdirectories_but_not_links() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("job/sub dir")).unwrap();
        std::fs::write(root.path().join("job/ä b.txt"), b"hello").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/hostname", root.path().join("job/link")).unwrap();
        let mut entries = read_local_directory(root.path(), "job/").unwrap();
        entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let listed: Vec<_> = entries.iter().map(|entry| (entry.key.as_str(), entry.size)).collect();
        assert_eq!(listed[0], ("job/sub dir/", listed[0].1));
        assert_eq!(listed[1], ("job/ä b.txt", 5));
        assert_eq!(listed.len(), 2);
        assert!(entries[1].modified.is_some());
        assert!(read_local_directory(root.path(), "missing/").unwrap().is_empty());
        // A job path that is itself a link is not listed through.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.path().join("job"), root.path().join("linked")).unwrap();
            let error = read_local_directory(root.path(), "linked/").unwrap_err();
            assert!(error.to_string().contains("symbolic link"), "{error}");
            assert!(read_local_directory(&root.path().join("missing-root"), "").unwrap().is_empty());
        }
    }
}
