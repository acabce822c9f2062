//! One OpenDAL service for the cloud drives (OneDrive, Dropbox, Google Drive): each drive's
//! client implements [`Drive`] (look up, download, upload, list, delete), and
//! [`DriveService`] makes it a store the engine and every layer treat like any other.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use opendal::raw::{
    OpCopy, OpCreateDir, OpDelete, OpList, OpPresign, OpRead, OpRename, OpStat, OpWrite, RpCreateDir, RpPresign,
    RpRead, RpRename, RpStat, Service, ServiceInfo, oio,
};
use opendal::{BytesRange, Capability, Error, ErrorKind, Metadata, OperationContext, Result};

use super::MODIFIED_METADATA;
use super::authorized::ResponseStream;
use super::session_writer::{SessionWriter, Upload};

/// What a drive's client offers.
pub trait Drive: Send + Sync + 'static {
    /// One file's upload.
    type Upload: Upload;

    /// The provider's name, for messages (`onedrive`).
    const NAME: &'static str;
    /// The largest file sent in one request.
    const WHOLE_LIMIT: usize;
    /// The size of an upload session's chunks.
    const CHUNK: usize;
    /// Whether one listing can reach everything beneath a folder.
    const LISTS_RECURSIVELY: bool;

    /// The item at `path`, or `None`.
    fn stat(&self, path: &str) -> impl Future<Output = Result<Option<Metadata>>> + Send;
    /// The file at `path`, from `range`'s offset, as an answer whose body is the bytes.
    fn download(&self, path: &str, range: BytesRange) -> impl Future<Output = Result<reqwest::Response>> + Send;
    /// An upload to `path`; `options` carry the user metadata the engine attaches.
    fn upload(self: &Arc<Self>, path: &str, options: &OpWrite) -> Self::Upload;
    /// The entries in the folder at `path` (beneath it, when `recursive`), paths relative to
    /// the service's root, folders ending in `/`; a folder that is not there is empty.
    fn list(&self, path: &str, recursive: bool) -> impl Future<Output = Result<Vec<oio::Entry>>> + Send;
    /// Removes the item at `path`; one that is not there is fine.
    fn delete(&self, path: &str) -> impl Future<Output = Result<()>> + Send;
    /// Makes the folder at `path`, where a drive needs that before an upload.
    fn create_dir(&self, _path: &str) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
}

/// The source's modification time the engine attached to a write, in seconds.
pub fn modified_seconds(options: &OpWrite) -> Option<i64> {
    options.user_metadata()?.get(MODIFIED_METADATA)?.parse().ok()
}

/// A drive as an OpenDAL service.
pub struct DriveService<D> {
    drive: Arc<D>,
}

impl<D> Clone for DriveService<D> {
    fn clone(&self) -> Self {
        Self { drive: self.drive.clone() }
    }
}

impl<D: Drive> fmt::Debug for DriveService<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the tokens the client holds.
        f.debug_struct("DriveService").field("provider", &D::NAME).finish_non_exhaustive()
    }
}

impl<D: Drive> DriveService<D> {
    /// A service over `drive`.
    pub fn new(drive: D) -> Self {
        Self { drive: Arc::new(drive) }
    }
}

fn unsupported(what: &str, provider: &str) -> Error {
    Error::new(ErrorKind::Unsupported, format!("{provider}: {what} is not offered"))
}

impl<D: Drive> Service for DriveService<D> {
    type Reader = oio::StreamReader<DriveReader<D>>;
    type Writer = SessionWriter<D::Upload>;
    type Lister = DriveLister<D>;
    type Deleter = oio::OneShotDeleter<DriveDeleter<D>>;
    type Copier = ();
    type Composer = ();

    fn info(&self) -> ServiceInfo {
        ServiceInfo::new(D::NAME, "/", "")
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
            list_with_recursive: D::LISTS_RECURSIVELY,
            shared: true,
            ..Capability::default()
        }
    }

    async fn create_dir(&self, _: &OperationContext, path: &str, _: OpCreateDir) -> Result<RpCreateDir> {
        self.drive.create_dir(path).await?;
        Ok(RpCreateDir::default())
    }

    async fn stat(&self, _: &OperationContext, path: &str, _: OpStat) -> Result<RpStat> {
        match self.drive.stat(path).await? {
            Some(metadata) => Ok(RpStat::new(metadata)),
            None => Err(Error::new(ErrorKind::NotFound, format!("{}: nothing at {path}", D::NAME))),
        }
    }

    fn read(&self, _: &OperationContext, path: &str, _: OpRead) -> Result<Self::Reader> {
        Ok(oio::StreamReader::new(DriveReader { drive: self.drive.clone(), path: path.to_owned() }))
    }

    fn write(&self, _: &OperationContext, path: &str, options: OpWrite) -> Result<Self::Writer> {
        Ok(SessionWriter::new(self.drive.upload(path, &options), D::WHOLE_LIMIT, D::CHUNK))
    }

    fn delete(&self, _: &OperationContext) -> Result<Self::Deleter> {
        Ok(oio::OneShotDeleter::new(DriveDeleter { drive: self.drive.clone() }))
    }

    fn list(&self, _: &OperationContext, path: &str, options: OpList) -> Result<Self::Lister> {
        let path = if path == "/" { String::new() } else { path.to_owned() };
        Ok(DriveLister { drive: self.drive.clone(), path, recursive: options.recursive(), entries: None })
    }

    fn copy(&self, _: &OperationContext, _: &str, _: &str, _: OpCopy) -> Result<Self::Copier> {
        Err(unsupported("copying on the server", D::NAME))
    }

    async fn rename(&self, _: &OperationContext, _: &str, _: &str, _: OpRename) -> Result<RpRename> {
        Err(unsupported("rename", D::NAME))
    }

    async fn presign(&self, _: &OperationContext, _: &str, _: OpPresign) -> Result<RpPresign> {
        Err(unsupported("presigning", D::NAME))
    }
}

/// Downloads a file from an offset.
pub struct DriveReader<D> {
    drive: Arc<D>,
    path: String,
}

impl<D: Drive> oio::StreamRead for DriveReader<D> {
    async fn open(&self, range: BytesRange) -> Result<(RpRead, Box<dyn oio::ReadStreamDyn>)> {
        let response = self.drive.download(&self.path, range).await?;
        let stream = ResponseStream { provider: D::NAME, response };
        Ok((RpRead::default(), Box::new(stream) as Box<dyn oio::ReadStreamDyn>))
    }
}

/// Lists a folder, in one go.
pub struct DriveLister<D> {
    drive: Arc<D>,
    path: String,
    recursive: bool,
    entries: Option<std::vec::IntoIter<oio::Entry>>,
}

impl<D: Drive> oio::List for DriveLister<D> {
    async fn next(&mut self) -> Result<Option<oio::Entry>> {
        if self.entries.is_none() {
            self.entries = Some(self.drive.list(&self.path, self.recursive).await?.into_iter());
        }
        Ok(self.entries.as_mut().and_then(Iterator::next))
    }
}

/// Deletes items.
pub struct DriveDeleter<D> {
    drive: Arc<D>,
}

impl<D: Drive> oio::OneShotDelete for DriveDeleter<D> {
    async fn delete_once(&self, path: String, _: OpDelete) -> Result<()> {
        self.drive.delete(&path).await
    }
}
