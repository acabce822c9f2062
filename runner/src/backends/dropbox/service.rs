//! A Dropbox account as an OpenDAL service, so the engine and every layer treat it like any
//! other store. Files up to 8 MiB go in one request; larger ones in an upload session, in
//! chunks of 8 MiB (a multiple of the 4 MiB blocks Dropbox hashes).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use opendal::raw::{
    OpCopy, OpCreateDir, OpDelete, OpList, OpPresign, OpRead, OpRename, OpStat, OpWrite, RpCreateDir, RpPresign,
    RpRead, RpRename, RpStat, Service, ServiceInfo, Timestamp, oio,
};
use opendal::{BytesRange, Capability, Error, ErrorKind, Metadata, MetadataBuilder, OperationContext, Result};

use super::api::{DropboxApi, Entry};
use crate::backends::MODIFIED_METADATA;
use crate::backends::authorized::ResponseStream;
use crate::backends::session_writer::{SessionWriter, Upload};

/// One upload-session chunk, and the largest file sent in one request.
const CHUNK: usize = 8 << 20;

/// One account.
#[derive(Clone)]
pub struct DropboxService {
    api: Arc<DropboxApi>,
}

impl fmt::Debug for DropboxService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DropboxService").finish_non_exhaustive()
    }
}

impl DropboxService {
    /// A service over `api`.
    pub fn new(api: DropboxApi) -> Self {
        Self { api: Arc::new(api) }
    }
}

/// OpenDAL's metadata for an entry; its content hash (hex) goes where an ETag would.
fn metadata(entry: &Entry) -> Metadata {
    if entry.is_folder() {
        return MetadataBuilder::dir().build();
    }
    let mut built = MetadataBuilder::file(entry.size);
    if let Some(hash) = &entry.content_hash {
        built.etag(hash.to_ascii_lowercase());
    }
    if let Some(modified) = entry.client_modified.as_deref().and_then(|time| time.parse::<Timestamp>().ok()) {
        built.last_modified(modified);
    }
    built.build()
}

impl Service for DropboxService {
    type Reader = oio::StreamReader<DropboxReader>;
    type Writer = SessionWriter<DropboxUpload>;
    type Lister = DropboxLister;
    type Deleter = oio::OneShotDeleter<DropboxDeleter>;
    type Copier = ();
    type Composer = ();

    fn info(&self) -> ServiceInfo {
        ServiceInfo::new("dropbox", "/", "")
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
            list_with_recursive: true,
            shared: true,
            ..Capability::default()
        }
    }

    async fn create_dir(&self, _: &OperationContext, _: &str, _: OpCreateDir) -> Result<RpCreateDir> {
        // An upload makes the folders it needs.
        Ok(RpCreateDir::default())
    }

    async fn stat(&self, _: &OperationContext, path: &str, _: OpStat) -> Result<RpStat> {
        match self.api.metadata(path).await? {
            Some(entry) => Ok(RpStat::new(metadata(&entry))),
            None => Err(Error::new(ErrorKind::NotFound, format!("dropbox: nothing at {path}"))),
        }
    }

    fn read(&self, _: &OperationContext, path: &str, _: OpRead) -> Result<Self::Reader> {
        Ok(oio::StreamReader::new(DropboxReader { api: self.api.clone(), path: path.to_owned() }))
    }

    fn write(&self, _: &OperationContext, path: &str, options: OpWrite) -> Result<Self::Writer> {
        // Dropbox takes whole seconds, in this one form.
        let modified = options
            .user_metadata()
            .and_then(|metadata| metadata.get(MODIFIED_METADATA))
            .and_then(|seconds| seconds.parse::<i64>().ok())
            .and_then(|seconds| jiff::Timestamp::from_second(seconds).ok())
            .map(|time| time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        let upload = DropboxUpload { api: self.api.clone(), path: path.to_owned(), modified, session: None };
        Ok(SessionWriter::new(upload, CHUNK, CHUNK))
    }

    fn delete(&self, _: &OperationContext) -> Result<Self::Deleter> {
        Ok(oio::OneShotDeleter::new(DropboxDeleter { api: self.api.clone() }))
    }

    fn list(&self, _: &OperationContext, path: &str, options: OpList) -> Result<Self::Lister> {
        Ok(DropboxLister {
            api: self.api.clone(),
            path: path.to_owned(),
            recursive: options.recursive(),
            entries: None,
        })
    }

    fn copy(&self, _: &OperationContext, _: &str, _: &str, _: OpCopy) -> Result<Self::Copier> {
        Err(Error::new(ErrorKind::Unsupported, "dropbox: copying on the server is not offered"))
    }

    async fn rename(&self, _: &OperationContext, _: &str, _: &str, _: OpRename) -> Result<RpRename> {
        Err(Error::new(ErrorKind::Unsupported, "dropbox: rename is not offered"))
    }

    async fn presign(&self, _: &OperationContext, _: &str, _: OpPresign) -> Result<RpPresign> {
        Err(Error::new(ErrorKind::Unsupported, "dropbox: presigned requests are not offered"))
    }
}

/// Downloads a file from an offset.
pub struct DropboxReader {
    api: Arc<DropboxApi>,
    path: String,
}

impl oio::StreamRead for DropboxReader {
    async fn open(&self, range: BytesRange) -> Result<(RpRead, Box<dyn oio::ReadStreamDyn>)> {
        let response = self.api.download(&self.path, range.offset(), range.size()).await?;
        let stream = ResponseStream { provider: "dropbox", response };
        Ok((RpRead::default(), Box::new(stream) as Box<dyn oio::ReadStreamDyn>))
    }
}

/// Uploads one file: in one request when small, else in an upload session.
pub struct DropboxUpload {
    api: Arc<DropboxApi>,
    path: String,
    /// The source's modification time, to keep on the file.
    modified: Option<String>,
    session: Option<String>,
}

impl Upload for DropboxUpload {
    async fn whole(&mut self, content: Bytes) -> Result<Metadata> {
        Ok(metadata(&self.api.upload(&self.path, content, self.modified.as_deref()).await?))
    }

    async fn chunk(&mut self, offset: u64, chunk: Bytes) -> Result<()> {
        match &self.session {
            None => self.session = Some(self.api.start_session(chunk).await?),
            Some(session) => self.api.append(session, offset, chunk).await?,
        }
        Ok(())
    }

    async fn finish(&mut self, offset: u64, last: Bytes) -> Result<Metadata> {
        let Some(session) = &self.session else {
            return Err(Error::new(ErrorKind::Unexpected, "dropbox: no upload session to finish"));
        };
        Ok(metadata(&self.api.finish(session, offset, last, &self.path, self.modified.as_deref()).await?))
    }

    /// Dropbox drops unfinished sessions after a week, and offers no call to drop one sooner.
    async fn cancel(&mut self) -> Result<()> {
        self.session = None;
        Ok(())
    }
}

/// Lists a folder (everything beneath it, when recursive): files, and folders ending in `/`.
pub struct DropboxLister {
    api: Arc<DropboxApi>,
    path: String,
    recursive: bool,
    entries: Option<std::vec::IntoIter<oio::Entry>>,
}

impl oio::List for DropboxLister {
    async fn next(&mut self) -> Result<Option<oio::Entry>> {
        if self.entries.is_none() {
            let listed = self.api.list(&self.path, self.recursive).await?;
            let entries: Vec<oio::Entry> = listed
                .iter()
                .map(|entry| oio::Entry::new(&self.api.relative(entry), metadata(entry)))
                // A recursive listing names the folder itself first.
                .filter(|entry| !entry.path().is_empty() && entry.path() != self.path.trim_start_matches('/'))
                .collect();
            self.entries = Some(entries.into_iter());
        }
        Ok(self.entries.as_mut().and_then(Iterator::next))
    }
}

/// Deletes files and folders.
pub struct DropboxDeleter {
    api: Arc<DropboxApi>,
}

impl oio::OneShotDelete for DropboxDeleter {
    async fn delete_once(&self, path: String, _: OpDelete) -> Result<()> {
        self.api.delete(&path).await
    }
}
