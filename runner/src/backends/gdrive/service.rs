//! A Google Drive (My Drive or a shared drive) as a [`Drive`]. Files up to 4 MiB go in one
//! `multipart` request (Drive takes up to 5 MB so); larger ones in a resumable session of
//! 8 MiB chunks (a multiple of the 256 KiB Drive asks for).

use std::sync::Arc;

use bytes::Bytes;
use opendal::raw::{OpWrite, Timestamp, oio};
use opendal::{BytesRange, Error, ErrorKind, Metadata, MetadataBuilder, Result};

use super::api::{DriveApi, File, UploadTarget};
use crate::backends::drive_service::{Drive, modified_seconds};
use crate::backends::session_writer::Upload;

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

impl Drive for DriveApi {
    type Upload = GdriveUpload;

    const NAME: &'static str = "gdrive";
    const WHOLE_LIMIT: usize = 4 << 20;
    /// 32 × 256 KiB.
    const CHUNK: usize = 32 * 256 * 1024;
    const LISTS_RECURSIVELY: bool = false;

    async fn stat(&self, path: &str) -> Result<Option<Metadata>> {
        Ok(self.item(path).await?.as_ref().map(metadata))
    }

    async fn download(&self, path: &str, range: BytesRange) -> Result<reqwest::Response> {
        let Some(file) = self.item(path).await? else {
            return Err(Error::new(ErrorKind::NotFound, format!("gdrive: nothing at {path}")));
        };
        DriveApi::download(self, &file.id, range.offset(), range.size()).await
    }

    fn upload(self: &Arc<Self>, path: &str, options: &OpWrite) -> GdriveUpload {
        let modified = modified_seconds(options)
            .and_then(|seconds| jiff::Timestamp::from_second(seconds).ok())
            .map(|time| time.to_string());
        GdriveUpload { api: self.clone(), path: path.to_owned(), modified, target: None, session: None }
    }

    async fn list(&self, path: &str, _recursive: bool) -> Result<Vec<oio::Entry>> {
        let files = self.children(path).await?;
        Ok(files
            .iter()
            .map(|file| {
                let slash = if file.is_folder() { "/" } else { "" };
                oio::Entry::new(&format!("{path}{}{slash}", file.name), metadata(file))
            })
            .collect())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        DriveApi::delete(self, path).await
    }

    async fn create_dir(&self, path: &str) -> Result<()> {
        self.folder(path, true).await.map(|_| ())
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
        Ok(metadata(&api.upload_whole(target, content, modified.as_deref()).await?))
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
