//! A OneDrive or SharePoint drive as a [`Drive`]. Files up to 4 MiB go in one request;
//! larger ones in an upload session, in fragments of 10 MiB (a multiple of the 320 KiB Graph
//! asks for).

use std::sync::Arc;

use bytes::Bytes;
use opendal::raw::{OpWrite, Timestamp, oio};
use opendal::{BytesRange, Error, ErrorKind, Metadata, MetadataBuilder, Result};

use super::graph::{DriveItem, Graph};
use crate::backends::SIZE_METADATA;
use crate::backends::drive_service::{Drive, modified_seconds};
use crate::backends::session_writer::Upload;

/// OpenDAL's metadata for a drive item; its QuickXorHash (hex) goes where an ETag would.
fn metadata(item: &DriveItem) -> Metadata {
    let mut built = if item.folder.is_some() { MetadataBuilder::dir() } else { MetadataBuilder::file(item.size) };
    if let Some(hash) = item.quickxor() {
        built.etag(hash);
    }
    if let Some(modified) = item.modified().and_then(|time| time.parse::<Timestamp>().ok()) {
        built.last_modified(modified);
    }
    built.build()
}

impl Drive for Graph {
    type Upload = DriveUpload;

    const NAME: &'static str = "onedrive";
    const WHOLE_LIMIT: usize = 4 << 20;
    /// 32 × 320 KiB.
    const CHUNK: usize = 32 * 320 * 1024;
    const LISTS_RECURSIVELY: bool = false;

    async fn stat(&self, path: &str) -> Result<Option<Metadata>> {
        Ok(self.item(path).await?.as_ref().map(metadata))
    }

    async fn download(&self, path: &str, range: BytesRange) -> Result<reqwest::Response> {
        Graph::download(self, path, range.offset(), range.size()).await
    }

    fn upload(self: &Arc<Self>, path: &str, options: &OpWrite) -> DriveUpload {
        let carried = options.user_metadata();
        let total = carried.and_then(|metadata| metadata.get(SIZE_METADATA)).and_then(|size| size.parse().ok());
        let modified = modified_seconds(options)
            .and_then(|seconds| Timestamp::from_second(seconds).ok())
            .map(|time| time.to_string());
        DriveUpload { graph: self.clone(), path: path.to_owned(), total, modified, session: None, uploaded: None }
    }

    async fn list(&self, path: &str, _recursive: bool) -> Result<Vec<oio::Entry>> {
        let items = self.children(path).await?;
        Ok(items
            .iter()
            .map(|item| {
                let slash = if item.folder.is_some() { "/" } else { "" };
                oio::Entry::new(&format!("{path}{}{slash}", item.name), metadata(item))
            })
            .collect())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        Graph::delete(self, path).await
    }
}

/// Uploads one file: in one request when small, else in an upload session.
pub struct DriveUpload {
    graph: Arc<Graph>,
    path: String,
    /// The file's size, which every fragment of a session must state.
    total: Option<u64>,
    /// The source's modification time, RFC 3339, to keep on the drive.
    modified: Option<String>,
    session: Option<String>,
    /// The item the last fragment's answer described.
    uploaded: Option<DriveItem>,
}

impl DriveUpload {
    fn total(&self) -> Result<u64> {
        self.total.ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "onedrive: a file over 4 MiB goes in an upload session, which needs its size up front",
            )
        })
    }

    async fn send(&mut self, offset: u64, fragment: Bytes) -> Result<()> {
        let total = self.total()?;
        let url = match &self.session {
            Some(url) => url.clone(),
            None => {
                let url = self.graph.upload_session(&self.path, self.modified.as_deref()).await?;
                self.session.insert(url).clone()
            }
        };
        let item = self.graph.upload_fragment(&url, fragment, offset, total).await?;
        self.uploaded = item.or(self.uploaded.take());
        Ok(())
    }
}

impl Upload for DriveUpload {
    async fn whole(&mut self, content: Bytes) -> Result<Metadata> {
        Ok(metadata(&self.graph.upload_small(&self.path, content, self.modified.as_deref()).await?))
    }

    async fn chunk(&mut self, offset: u64, chunk: Bytes) -> Result<()> {
        self.send(offset, chunk).await
    }

    async fn finish(&mut self, offset: u64, last: Bytes) -> Result<Metadata> {
        let expected = self.total()?;
        let arrived = offset + last.len() as u64;
        if arrived != expected {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!("onedrive: the file was announced as {expected} bytes but {arrived} arrived"),
            ));
        }
        if !last.is_empty() {
            self.send(offset, last).await?;
        }
        Ok(self.uploaded.as_ref().map_or_else(|| MetadataBuilder::file(expected).build(), metadata))
    }

    /// Nothing is at the path until a session completes; cancelling it frees what arrived.
    async fn cancel(&mut self) -> Result<()> {
        match self.session.take() {
            Some(url) => self.graph.cancel_session(&url).await,
            None => Ok(()),
        }
    }
}
