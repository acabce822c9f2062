//! A Google Drive (My Drive or a shared drive) as an OpenDAL service, so the engine and every
//! layer treat it like any other store. Files up to 4 MiB go in one `multipart` request
//! (Drive takes up to 5 MB so); larger ones in a resumable session of 8 MiB chunks (a
//! multiple of the 256 KiB Drive asks for).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use opendal::raw::{
    OpCopy, OpCreateDir, OpDelete, OpList, OpPresign, OpRead, OpRename, OpStat, OpWrite, RpCreateDir, RpPresign,
    RpRead, RpRename, RpStat, Service, ServiceInfo, Timestamp, oio,
};
use opendal::{BytesRange, Capability, Error, ErrorKind, Metadata, MetadataBuilder, OperationContext, Result};

use super::api::{DriveApi, File, UploadTarget};
use crate::backends::MODIFIED_METADATA;
use crate::backends::authorized::ResponseStream;
use crate::backends::session_writer::{SessionWriter, Upload};

/// The largest file sent in one request.
const WHOLE: usize = 4 << 20;
/// One resumable-upload chunk: 32 × 256 KiB.
const CHUNK: usize = 32 * 256 * 1024;

/// One drive.
#[derive(Clone)]
pub struct GdriveService {
    api: Arc<DriveApi>,
}

impl fmt::Debug for GdriveService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GdriveService").finish_non_exhaustive()
    }
}

impl GdriveService {
    /// A service over `api`.
    pub fn new(api: DriveApi) -> Self {
        Self { api: Arc::new(api) }
    }
}

/// OpenDAL's metadata for a file: Drive's MD5 as `Content-MD5` (base64), as GCS gives it.
fn metadata(file: &File) -> Metadata {
    use base64::Engine;
    if file.is_folder() {
        return MetadataBuilder::dir().build();
    }
    let mut built = MetadataBuilder::file(file.size.as_deref().and_then(|size| size.parse().ok()).unwrap_or(0));
    if let Some(md5) = file.md5_checksum.as_deref().and_then(|md5| hex::decode(md5).ok()) {
        built.content_md5(base64::engine::general_purpose::STANDARD.encode(md5));
    }
    if let Some(modified) = file.modified_time.as_deref().and_then(|time| time.parse::<Timestamp>().ok()) {
        built.last_modified(modified);
    }
    built.build()
}

impl Service for GdriveService {
    type Reader = oio::StreamReader<GdriveReader>;
    type Writer = SessionWriter<GdriveUpload>;
    type Lister = GdriveLister;
    type Deleter = oio::OneShotDeleter<GdriveDeleter>;
    type Copier = ();
    type Composer = ();

    fn info(&self) -> ServiceInfo {
        ServiceInfo::new("gdrive", "/", "")
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

    async fn create_dir(&self, _: &OperationContext, path: &str, _: OpCreateDir) -> Result<RpCreateDir> {
        self.api.folder(path, true).await?;
        Ok(RpCreateDir::default())
    }

    async fn stat(&self, _: &OperationContext, path: &str, _: OpStat) -> Result<RpStat> {
        match self.api.item(path).await? {
            Some(file) => Ok(RpStat::new(metadata(&file))),
            None => Err(Error::new(ErrorKind::NotFound, format!("gdrive: nothing at {path}"))),
        }
    }

    fn read(&self, _: &OperationContext, path: &str, _: OpRead) -> Result<Self::Reader> {
        Ok(oio::StreamReader::new(GdriveReader { api: self.api.clone(), path: path.to_owned() }))
    }

    fn write(&self, _: &OperationContext, path: &str, options: OpWrite) -> Result<Self::Writer> {
        let modified = options
            .user_metadata()
            .and_then(|metadata| metadata.get(MODIFIED_METADATA))
            .and_then(|seconds| seconds.parse::<i64>().ok())
            .and_then(|seconds| jiff::Timestamp::from_second(seconds).ok())
            .map(|time| time.to_string());
        let upload =
            GdriveUpload { api: self.api.clone(), path: path.to_owned(), modified, target: None, session: None };
        Ok(SessionWriter::new(upload, WHOLE, CHUNK))
    }

    fn delete(&self, _: &OperationContext) -> Result<Self::Deleter> {
        Ok(oio::OneShotDeleter::new(GdriveDeleter { api: self.api.clone() }))
    }

    fn list(&self, _: &OperationContext, path: &str, _: OpList) -> Result<Self::Lister> {
        let prefix = if path == "/" { String::new() } else { path.to_owned() };
        Ok(GdriveLister { api: self.api.clone(), prefix, entries: None })
    }

    fn copy(&self, _: &OperationContext, _: &str, _: &str, _: OpCopy) -> Result<Self::Copier> {
        Err(Error::new(ErrorKind::Unsupported, "gdrive: copying on the server is not offered"))
    }

    async fn rename(&self, _: &OperationContext, _: &str, _: &str, _: OpRename) -> Result<RpRename> {
        Err(Error::new(ErrorKind::Unsupported, "gdrive: rename is not offered"))
    }

    async fn presign(&self, _: &OperationContext, _: &str, _: OpPresign) -> Result<RpPresign> {
        Err(Error::new(ErrorKind::Unsupported, "gdrive: presigned requests are not offered"))
    }
}

/// Downloads a file from an offset.
pub struct GdriveReader {
    api: Arc<DriveApi>,
    path: String,
}

impl oio::StreamRead for GdriveReader {
    async fn open(&self, range: BytesRange) -> Result<(RpRead, Box<dyn oio::ReadStreamDyn>)> {
        let Some(file) = self.api.item(&self.path).await? else {
            return Err(Error::new(ErrorKind::NotFound, format!("gdrive: nothing at {}", self.path)));
        };
        let response = self.api.download(&file.id, range.offset(), range.size()).await?;
        let stream = ResponseStream { provider: "gdrive", response };
        Ok((RpRead::default(), Box::new(stream) as Box<dyn oio::ReadStreamDyn>))
    }
}

/// Uploads one file: a new version of the one at the path, else a new file.
pub struct GdriveUpload {
    api: Arc<DriveApi>,
    path: String,
    /// The source's modification time, RFC 3339.
    modified: Option<String>,
    target: Option<UploadTarget>,
    session: Option<String>,
}

impl GdriveUpload {
    async fn target(&mut self) -> Result<&UploadTarget> {
        if self.target.is_none() {
            self.target = Some(self.api.target(&self.path).await?);
        }
        self.target.as_ref().ok_or_else(|| Error::new(ErrorKind::Unexpected, "gdrive: no upload target"))
    }

    fn session(&self) -> Result<&str> {
        self.session.as_deref().ok_or_else(|| Error::new(ErrorKind::Unexpected, "gdrive: no upload session"))
    }
}

impl Upload for GdriveUpload {
    async fn whole(&mut self, content: Bytes) -> Result<Metadata> {
        let api = self.api.clone();
        let modified = self.modified.clone();
        let target = self.target().await?;
        Ok(metadata(&api.upload(target, content, modified.as_deref()).await?))
    }

    async fn chunk(&mut self, offset: u64, chunk: Bytes) -> Result<()> {
        if self.session.is_none() {
            let api = self.api.clone();
            let modified = self.modified.clone();
            let target = self.target().await?;
            self.session = Some(api.start_session(target, modified.as_deref()).await?);
        }
        self.api.send_chunk(self.session()?, offset, chunk, None).await?;
        Ok(())
    }

    async fn finish(&mut self, offset: u64, last: Bytes) -> Result<Metadata> {
        let total = offset + last.len() as u64;
        match self.api.send_chunk(self.session()?, offset, last, Some(total)).await? {
            Some(file) => Ok(metadata(&file)),
            None => Err(Error::new(ErrorKind::Unexpected, "gdrive: the upload did not complete").set_temporary()),
        }
    }

    /// Nothing changes at the path until a session completes; cancelling it frees what arrived.
    async fn cancel(&mut self) -> Result<()> {
        match self.session.take() {
            Some(session) => self.api.cancel_session(&session).await,
            None => Ok(()),
        }
    }
}

/// Lists one folder: files, and folders ending in `/`.
pub struct GdriveLister {
    api: Arc<DriveApi>,
    prefix: String,
    entries: Option<std::vec::IntoIter<oio::Entry>>,
}

impl oio::List for GdriveLister {
    async fn next(&mut self) -> Result<Option<oio::Entry>> {
        if self.entries.is_none() {
            let files = self.api.children(&self.prefix).await?;
            let entries: Vec<oio::Entry> = files
                .iter()
                .map(|file| {
                    let path = match file.is_folder() {
                        true => format!("{}{}/", self.prefix, file.name),
                        false => format!("{}{}", self.prefix, file.name),
                    };
                    oio::Entry::new(&path, metadata(file))
                })
                .collect();
            self.entries = Some(entries.into_iter());
        }
        Ok(self.entries.as_mut().and_then(Iterator::next))
    }
}

/// Deletes files and folders.
pub struct GdriveDeleter {
    api: Arc<DriveApi>,
}

impl oio::OneShotDelete for GdriveDeleter {
    async fn delete_once(&self, path: String, _: OpDelete) -> Result<()> {
        self.api.delete(&path).await
    }
}
