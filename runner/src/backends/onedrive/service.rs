//! A OneDrive or SharePoint drive as an OpenDAL service, so the engine and every layer treat
//! it like any other store. Files up to 4 MiB go in one request; larger ones in an upload
//! session, in fragments of 10 MiB (a multiple of the 320 KiB Graph asks for).

use std::fmt;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use opendal::raw::{
    OpCopy, OpCreateDir, OpDelete, OpList, OpPresign, OpRead, OpRename, OpStat, OpWrite, RpCreateDir, RpPresign,
    RpRead, RpRename, RpStat, Service, ServiceInfo, Timestamp, oio,
};
use opendal::{Buffer, BytesRange, Capability, Error, ErrorKind, Metadata, MetadataBuilder, OperationContext, Result};

use super::graph::{DriveItem, Graph};
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
    type Writer = DriveWriter;
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
        Ok(DriveWriter {
            graph: self.graph.clone(),
            path: path.to_owned(),
            total,
            modified,
            buffer: BytesMut::new(),
            session: None,
            sent: 0,
            uploaded: None,
        })
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
        Ok((RpRead::default(), Box::new(DriveReadStream { response }) as Box<dyn oio::ReadStreamDyn>))
    }
}

struct DriveReadStream {
    response: reqwest::Response,
}

impl oio::ReadStream for DriveReadStream {
    async fn read(&mut self) -> Result<Buffer> {
        let chunk = self.response.chunk().await.map_err(|error| {
            Error::new(ErrorKind::Unexpected, format!("onedrive: downloading: {}", error.without_url())).set_temporary()
        })?;
        Ok(chunk.map(Buffer::from).unwrap_or_default())
    }
}

/// Uploads a file: in one request when small, else in an upload session.
pub struct DriveWriter {
    graph: Arc<Graph>,
    path: String,
    /// The file's size, which every fragment of a session must state.
    total: Option<u64>,
    /// The source's modification time, RFC 3339, to keep on the drive.
    modified: Option<String>,
    buffer: BytesMut,
    session: Option<String>,
    sent: u64,
    /// The item the last fragment's answer described.
    uploaded: Option<DriveItem>,
}

impl DriveWriter {
    /// Sends the first `length` buffered bytes; they leave the buffer only once sent, so a
    /// failed fragment can be sent again.
    async fn send_fragment(&mut self, length: usize) -> Result<()> {
        let (Some(url), Some(total)) = (self.session.clone(), self.total) else {
            return Err(Error::new(ErrorKind::Unexpected, "onedrive: no upload session"));
        };
        let fragment = Bytes::copy_from_slice(&self.buffer[..length]);
        let item = self.graph.upload_fragment(&url, fragment, self.sent, total).await?;
        self.buffer.advance(length);
        self.sent += length as u64;
        self.uploaded = item.or(self.uploaded.take());
        Ok(())
    }

    /// Starts the session once the file is too large for one request, and sends every
    /// whole fragment buffered. The buffer holds less than a fragment between calls and a
    /// call adds at most one part (8 MiB), so one call sends at most one fragment.
    async fn send_whole_fragments(&mut self) -> Result<()> {
        if self.session.is_none() && self.buffer.len() > SMALL {
            if self.total.is_none() {
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    "onedrive: a file over 4 MiB goes in an upload session, which needs its size up front",
                ));
            }
            self.session = Some(self.graph.upload_session(&self.path, self.modified.as_deref()).await?);
        }
        while self.session.is_some() && self.buffer.len() >= FRAGMENT {
            self.send_fragment(FRAGMENT).await?;
        }
        Ok(())
    }
}

impl oio::Write for DriveWriter {
    /// A failed call leaves the writer as it was, so the retry layer can repeat it.
    async fn write(&mut self, buffer: Buffer) -> Result<()> {
        let before = self.buffer.len();
        for chunk in buffer {
            self.buffer.extend_from_slice(&chunk);
        }
        let added = self.buffer.len() - before;
        let sent = self.sent;
        let result = self.send_whole_fragments().await;
        if result.is_err() && self.sent == sent {
            self.buffer.truncate(self.buffer.len() - added);
        }
        result
    }

    async fn close(&mut self) -> Result<Metadata> {
        if self.session.is_none() {
            let content = std::mem::take(&mut self.buffer).freeze();
            let item = self.graph.upload_small(&self.path, content, self.modified.as_deref()).await?;
            return Ok(metadata(&item));
        }
        let expected = self.total.unwrap_or_default();
        if self.sent + self.buffer.len() as u64 != expected {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!(
                    "onedrive: the file was announced as {expected} bytes but {} arrived",
                    self.sent + self.buffer.len() as u64
                ),
            ));
        }
        if !self.buffer.is_empty() {
            self.send_fragment(self.buffer.len()).await?;
        }
        Ok(self.uploaded.as_ref().map_or_else(|| MetadataBuilder::file(expected).build(), metadata))
    }

    /// Nothing is at the path until a session completes; cancelling it frees what arrived.
    async fn abort(&mut self) -> Result<()> {
        self.buffer.clear();
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
