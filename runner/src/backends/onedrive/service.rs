//! A OneDrive or SharePoint drive as an OpenDAL service, so the engine and every layer treat
//! it like any other store. Files up to 4 MiB go in one request; larger ones in an upload
//! session, in fragments of 10 MiB (a multiple of the 320 KiB Graph asks for).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use opendal::raw::{
    OpCopy, OpCreateDir, OpDelete, OpList, OpPresign, OpRead, OpRename, OpStat, OpWrite, RpCreateDir, RpPresign,
    RpRead, RpRename, RpStat, Service, ServiceInfo, Timestamp, oio,
};
use opendal::{BytesRange, Capability, Error, ErrorKind, Metadata, MetadataBuilder, OperationContext, Result};

use super::graph::{DriveItem, Graph};
use crate::backends::authorized::ResponseStream;
use crate::backends::session_writer::{SessionWriter, Upload};
use crate::backends::{MODIFIED_METADATA, SIZE_METADATA};

/// The largest file sent in one request.
const SMALL: usize = 4 << 20;
/// One upload-session fragment: 32 × 320 KiB.
const FRAGMENT: usize = 32 * 320 * 1024;

/// One drive.
#[derive(Clone)]
pub struct DriveService {
    graph: Arc<Graph>,
}

impl fmt::Debug for DriveService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriveService").finish_non_exhaustive()
    }
}

impl DriveService {
    /// A service over `graph`.
    pub fn new(graph: Graph) -> Self {
        Self { graph: Arc::new(graph) }
    }
}

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

impl Service for DriveService {
    type Reader = oio::StreamReader<DriveReader>;
    type Writer = SessionWriter<DriveUpload>;
    type Lister = DriveLister;
    type Deleter = oio::OneShotDeleter<DriveDeleter>;
    type Copier = ();
    type Composer = ();

    fn info(&self) -> ServiceInfo {
        ServiceInfo::new("onedrive", "/", "")
    }

    fn capability(&self) -> Capability {
        Capability {
            stat: true,
            read: true,
            write: true,
            write_can_empty: true,
            write_can_multi: true,
            write_with_user_metadata: true,
            delete: true,
            list: true,
            shared: true,
            ..Capability::default()
        }
    }

    async fn create_dir(&self, _: &OperationContext, _: &str, _: OpCreateDir) -> Result<RpCreateDir> {
        // An upload by path makes the folders it needs.
        Ok(RpCreateDir::default())
    }

    async fn stat(&self, _: &OperationContext, path: &str, _: OpStat) -> Result<RpStat> {
        match self.graph.item(path).await? {
            Some(item) => Ok(RpStat::new(metadata(&item))),
            None => Err(Error::new(ErrorKind::NotFound, format!("onedrive: no item at {path}"))),
        }
    }

    fn read(&self, _: &OperationContext, path: &str, _: OpRead) -> Result<Self::Reader> {
        Ok(oio::StreamReader::new(DriveReader { graph: self.graph.clone(), path: path.to_owned() }))
    }

    fn write(&self, _: &OperationContext, path: &str, options: OpWrite) -> Result<Self::Writer> {
        let carried = options.user_metadata();
        let total =
            carried.as_ref().and_then(|metadata| metadata.get(SIZE_METADATA)).and_then(|size| size.parse::<u64>().ok());
        let modified = carried
            .as_ref()
            .and_then(|metadata| metadata.get(MODIFIED_METADATA))
            .and_then(|seconds| seconds.parse::<i64>().ok())
            .and_then(|seconds| Timestamp::from_second(seconds).ok())
            .map(|time| time.to_string());
        let upload = DriveUpload {
            graph: self.graph.clone(),
            path: path.to_owned(),
            total,
            modified,
            session: None,
            uploaded: None,
        };
        Ok(SessionWriter::new(upload, SMALL, FRAGMENT))
    }

    fn delete(&self, _: &OperationContext) -> Result<Self::Deleter> {
        Ok(oio::OneShotDeleter::new(DriveDeleter { graph: self.graph.clone() }))
    }

    fn list(&self, _: &OperationContext, path: &str, _: OpList) -> Result<Self::Lister> {
        let prefix = if path == "/" { String::new() } else { path.to_owned() };
        Ok(DriveLister { graph: self.graph.clone(), prefix, entries: None })
    }

    fn copy(&self, _: &OperationContext, _: &str, _: &str, _: OpCopy) -> Result<Self::Copier> {
        Err(Error::new(ErrorKind::Unsupported, "onedrive: copying on the server is not offered"))
    }

    async fn rename(&self, _: &OperationContext, _: &str, _: &str, _: OpRename) -> Result<RpRename> {
        Err(Error::new(ErrorKind::Unsupported, "onedrive: rename is not offered"))
    }

    async fn presign(&self, _: &OperationContext, _: &str, _: OpPresign) -> Result<RpPresign> {
        Err(Error::new(ErrorKind::Unsupported, "onedrive: presigned requests are not offered"))
    }
}

/// Downloads a file from an offset.
pub struct DriveReader {
    graph: Arc<Graph>,
    path: String,
}

impl oio::StreamRead for DriveReader {
    async fn open(&self, range: BytesRange) -> Result<(RpRead, Box<dyn oio::ReadStreamDyn>)> {
        let response = self.graph.download(&self.path, range.offset(), range.size()).await?;
        let stream = ResponseStream { provider: "onedrive", response };
        Ok((RpRead::default(), Box::new(stream) as Box<dyn oio::ReadStreamDyn>))
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

/// Lists one folder: files, and folders ending in `/`.
pub struct DriveLister {
    graph: Arc<Graph>,
    prefix: String,
    entries: Option<std::vec::IntoIter<oio::Entry>>,
}

impl oio::List for DriveLister {
    async fn next(&mut self) -> Result<Option<oio::Entry>> {
        if self.entries.is_none() {
            let items = self.graph.children(&self.prefix).await?;
            let entries: Vec<oio::Entry> = items
                .iter()
                .map(|item| {
                    let path = match item.folder.is_some() {
                        true => format!("{}{}/", self.prefix, item.name),
                        false => format!("{}{}", self.prefix, item.name),
                    };
                    oio::Entry::new(&path, metadata(item))
                })
                .collect();
            self.entries = Some(entries.into_iter());
        }
        Ok(self.entries.as_mut().and_then(Iterator::next))
    }
}

/// Deletes items.
pub struct DriveDeleter {
    graph: Arc<Graph>,
}

impl oio::OneShotDelete for DriveDeleter {
    async fn delete_once(&self, path: String, _: OpDelete) -> Result<()> {
        self.graph.delete(&path).await
    }
}
