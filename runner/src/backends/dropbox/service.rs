//! A Dropbox account as a [`Drive`]. Files up to 8 MiB go in one request; larger ones in an
//! upload session, in chunks of 8 MiB (a multiple of the 4 MiB blocks Dropbox hashes).

use std::sync::Arc;

use bytes::Bytes;
use opendal::raw::{OpWrite, Timestamp, oio};
use opendal::{BytesRange, Error, ErrorKind, Metadata, MetadataBuilder, Result};

use super::api::{DropboxApi, Entry};
use crate::backends::drive_service::{Drive, modified_seconds};
use crate::backends::session_writer::Upload;

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

impl Drive for DropboxApi {
    type Upload = DropboxUpload;

    const NAME: &'static str = "dropbox";
    const WHOLE_LIMIT: usize = 8 << 20;
    const CHUNK: usize = 8 << 20;
    const LISTS_RECURSIVELY: bool = true;

    async fn stat(&self, path: &str) -> Result<Option<Metadata>> {
        Ok(self.metadata(path).await?.as_ref().map(metadata))
    }

    async fn download(&self, path: &str, range: BytesRange) -> Result<reqwest::Response> {
        DropboxApi::download(self, path, range.offset(), range.size()).await
    }

    fn upload(self: &Arc<Self>, path: &str, options: &OpWrite) -> DropboxUpload {
        // Dropbox takes whole seconds, in this one form.
        let modified = modified_seconds(options)
            .and_then(|seconds| jiff::Timestamp::from_second(seconds).ok())
            .map(|time| time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        DropboxUpload { api: self.clone(), path: path.to_owned(), modified, session: None }
    }

    async fn list(&self, path: &str, recursive: bool) -> Result<Vec<oio::Entry>> {
        let listed = DropboxApi::list(self, path, recursive).await?;
        Ok(listed
            .iter()
            .map(|entry| oio::Entry::new(&self.relative(entry), metadata(entry)))
            // A recursive listing names the folder itself first.
            .filter(|entry| !entry.path().is_empty() && entry.path() != path.trim_start_matches('/'))
            .collect())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        DropboxApi::delete(self, path).await
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
        Ok(metadata(&self.api.upload_whole(&self.path, content, self.modified.as_deref()).await?))
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
