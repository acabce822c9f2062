//! SFTP as an OpenDAL service, so the engine and every layer (retry, timeout, tracing,
//! throttle) treat it like any other store. Writes are staged under `.ferry-partial/` at the
//! root and renamed into place when complete, so no half-written file ever appears at its
//! final path (an SFTP drop box is often watched by another program).

use std::fmt;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use opendal::raw::{
    OpCopy, OpCreateDir, OpDelete, OpList, OpPresign, OpRead, OpRename, OpStat, OpWrite, RpCreateDir, RpPresign,
    RpRead, RpRename, RpStat, Service, ServiceInfo, Timestamp, oio,
};
use opendal::{
    Buffer, BytesRange, Capability, EntryMode, Error, ErrorKind, Metadata, MetadataBuilder, OperationContext, Result,
};
use russh_sftp::client::fs::File;
use russh_sftp::protocol::{FileAttributes, FileType, OpenFlags, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::connection::{Lent, Links};
use crate::backends::MODIFIED_METADATA;
use crate::storage::PARTIAL_DIRECTORY;

/// The largest piece one read hands the engine.
const READ_PIECE: usize = 1 << 20;

/// One SFTP server, under one root directory.
#[derive(Clone)]
pub struct SftpService {
    core: Arc<Core>,
}

struct Core {
    links: Links,
    /// `""` (the login directory) or a directory ending in `/`.
    root: String,
    /// Staged files a killed run left behind are removed once, before the first write.
    swept: tokio::sync::OnceCell<()>,
}

impl fmt::Debug for SftpService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the credentials the connector holds.
        f.debug_struct("SftpService").field("root", &self.core.root).finish_non_exhaustive()
    }
}

/// `root` as the service joins paths to it: `""` or ending in `/`.
pub fn normalize_root(root: Option<&str>) -> String {
    match root.map(str::trim).filter(|root| !root.is_empty()) {
        None => String::new(),
        Some(root) if root.trim_end_matches('/').is_empty() => "/".to_owned(),
        Some(root) => format!("{}/", root.trim_end_matches('/')),
    }
}

impl SftpService {
    /// A service reaching the server through `links`, with paths under `root`.
    pub fn new(links: Links, root: Option<&str>) -> Self {
        Self { core: Arc::new(Core { links, root: normalize_root(root), swept: tokio::sync::OnceCell::new() }) }
    }

    /// The server path of a service path (OpenDAL's: relative, directories ending in `/`).
    fn server_path(&self, path: &str) -> String {
        let joined = format!("{}{}", self.core.root, path.trim_start_matches('/'));
        match joined.trim_end_matches('/') {
            "" if joined.starts_with('/') => "/".to_owned(),
            "" => ".".to_owned(),
            trimmed => trimmed.to_owned(),
        }
    }

    async fn link(&self) -> Result<Lent> {
        self.core.links.get().await
    }

    async fn failed(&self, lent: &Lent, doing: String, error: russh_sftp::client::error::Error) -> Error {
        self.core.links.failed(lent, &doing, error).await
    }

    /// Makes a directory and its missing parents; one that exists (or appears meanwhile,
    /// made by another transfer) is fine.
    async fn make_directories(&self, lent: &Lent, directory: &str) -> Result<()> {
        if directory == "." || directory == "/" || is_directory(&lent.link.sftp.metadata(directory).await) {
            return Ok(());
        }
        let absolute = directory.starts_with('/');
        let mut current = String::new();
        for part in directory.split('/').filter(|part| !part.is_empty()) {
            if !current.is_empty() || absolute {
                current.push('/');
            }
            current.push_str(part);
            if let Err(error) = lent.link.sftp.create_dir(current.as_str()).await
                && !is_directory(&lent.link.sftp.metadata(current.as_str()).await)
            {
                return Err(self.failed(lent, format!("making directory {current}"), error).await);
            }
        }
        Ok(())
    }

    /// Renames `from` to `to`. SFTP's rename refuses an existing target, so the old version
    /// goes first: for a moment `to` holds nothing, but never a partial file.
    async fn replace(&self, lent: &Lent, from: &str, to: &str) -> Result<()> {
        if let Err(error) = lent.link.sftp.remove_file(to).await
            && !is_not_found(&error)
        {
            return Err(self.failed(lent, format!("replacing {to}"), error).await);
        }
        if let Err(error) = lent.link.sftp.rename(from, to).await {
            return Err(self.failed(lent, format!("moving {from} to {to}"), error).await);
        }
        Ok(())
    }

    /// Removes staged files older than a day from `staging`: a killed run's leftovers (a
    /// file another runner is writing now is younger than that).
    async fn sweep(&self, lent: &Lent, staging: &str) {
        let Ok(entries) = lent.link.sftp.read_dir(staging).await else { return };
        let cutoff = std::time::SystemTime::now() - crate::local_copy::STALE_STAGED_AFTER;
        for entry in entries {
            let stale = entry.metadata().modified().is_ok_and(|modified| modified < cutoff);
            if stale && entry.file_type() == FileType::File && entry.file_name().ends_with(".part") {
                let path = format!("{staging}/{}", entry.file_name());
                if lent.link.sftp.remove_file(path.as_str()).await.is_ok() {
                    tracing::info!(path, "removed a staged file a stopped run left");
                }
            }
        }
    }
}

fn is_directory(metadata: &std::result::Result<FileAttributes, russh_sftp::client::error::Error>) -> bool {
    matches!(metadata, Ok(attributes) if attributes.file_type() == FileType::Dir)
}

fn is_not_found(error: &russh_sftp::client::error::Error) -> bool {
    matches!(error, russh_sftp::client::error::Error::Status(status) if status.status_code == StatusCode::NoSuchFile)
}

/// OpenDAL's metadata for a file or directory (links and special files are `Unknown`).
fn metadata(attributes: &FileAttributes) -> Metadata {
    let mut built = match attributes.file_type() {
        FileType::File => MetadataBuilder::file(attributes.len()),
        FileType::Dir => MetadataBuilder::dir(),
        FileType::Symlink | FileType::Other => MetadataBuilder::unknown(),
    };
    if let Some(modified) = attributes.mtime.and_then(|seconds| Timestamp::from_second(i64::from(seconds)).ok()) {
        built.last_modified(modified);
    }
    built.build()
}

fn io_error(doing: String) -> impl FnOnce(std::io::Error) -> Error {
    move |error| Error::new(ErrorKind::Unexpected, format!("sftp: {doing}")).set_source(error).set_temporary()
}

impl Service for SftpService {
    type Reader = oio::StreamReader<SftpReader>;
    type Writer = SftpWriter;
    type Lister = SftpLister;
    type Deleter = oio::OneShotDeleter<SftpDeleter>;
    type Copier = ();
    type Composer = ();

    fn info(&self) -> ServiceInfo {
        ServiceInfo::new("sftp", &self.core.root, "")
    }

    fn capability(&self) -> Capability {
        Capability {
            stat: true,
            read: true,
            write: true,
            write_can_empty: true,
            write_can_multi: true,
            write_with_user_metadata: true,
            create_dir: true,
            delete: true,
            rename: true,
            list: true,
            shared: true,
            ..Capability::default()
        }
    }

    async fn create_dir(&self, _: &OperationContext, path: &str, _: OpCreateDir) -> Result<RpCreateDir> {
        let lent = self.link().await?;
        self.make_directories(&lent, &self.server_path(path)).await?;
        Ok(RpCreateDir::default())
    }

    async fn stat(&self, _: &OperationContext, path: &str, _: OpStat) -> Result<RpStat> {
        let lent = self.link().await?;
        let server_path = self.server_path(path);
        match lent.link.sftp.metadata(server_path.as_str()).await {
            Ok(attributes) => {
                let found = metadata(&attributes);
                if path.ends_with('/') && found.mode() != EntryMode::DIR {
                    return Err(Error::new(ErrorKind::NotFound, format!("sftp: {server_path} is not a directory")));
                }
                Ok(RpStat::new(found))
            }
            Err(error) => Err(self.failed(&lent, format!("stat {server_path}"), error).await),
        }
    }

    fn read(&self, _: &OperationContext, path: &str, _: OpRead) -> Result<Self::Reader> {
        Ok(oio::StreamReader::new(SftpReader { service: self.clone(), path: self.server_path(path) }))
    }

    fn write(&self, _: &OperationContext, path: &str, options: OpWrite) -> Result<Self::Writer> {
        let modified = options
            .user_metadata()
            .and_then(|metadata| metadata.get(MODIFIED_METADATA))
            .and_then(|seconds| seconds.parse::<u32>().ok());
        Ok(SftpWriter { service: self.clone(), path: self.server_path(path), modified, open: None })
    }

    fn delete(&self, _: &OperationContext) -> Result<Self::Deleter> {
        Ok(oio::OneShotDeleter::new(SftpDeleter { service: self.clone() }))
    }

    fn list(&self, _: &OperationContext, path: &str, _: OpList) -> Result<Self::Lister> {
        let prefix = if path == "/" { String::new() } else { path.to_owned() };
        Ok(SftpLister { service: self.clone(), prefix, entries: None })
    }

    fn copy(&self, _: &OperationContext, _: &str, _: &str, _: OpCopy) -> Result<Self::Copier> {
        Err(Error::new(ErrorKind::Unsupported, "sftp: copying on the server is not supported"))
    }

    /// Moves a file (sync's trash), making the target's directory; an existing target is
    /// replaced, as SFTP's own rename would refuse it.
    async fn rename(&self, _: &OperationContext, from: &str, to: &str, _: OpRename) -> Result<RpRename> {
        let lent = self.link().await?;
        let (from, to) = (self.server_path(from), self.server_path(to));
        if let Some((parent, _)) = to.rsplit_once('/') {
            self.make_directories(&lent, parent).await?;
        }
        self.replace(&lent, &from, &to).await?;
        Ok(RpRename::default())
    }

    async fn presign(&self, _: &OperationContext, _: &str, _: OpPresign) -> Result<RpPresign> {
        Err(Error::new(ErrorKind::Unsupported, "sftp: presigned requests do not exist"))
    }
}

/// Opens a file for reading at a range.
pub struct SftpReader {
    service: SftpService,
    path: String,
}

impl oio::StreamRead for SftpReader {
    async fn open(&self, range: BytesRange) -> Result<(RpRead, Box<dyn oio::ReadStreamDyn>)> {
        let lent = self.service.link().await?;
        let mut file = match lent.link.sftp.open(self.path.as_str()).await {
            Ok(file) => file,
            Err(error) => return Err(self.service.failed(&lent, format!("opening {}", self.path), error).await),
        };
        if range.offset() != 0 {
            file.seek(std::io::SeekFrom::Start(range.offset()))
                .await
                .map_err(io_error(format!("seeking {}", self.path)))?;
        }
        let stream = SftpReadStream { _lent: lent, file, remaining: range.size(), path: self.path.clone() };
        Ok((RpRead::default(), Box::new(stream) as Box<dyn oio::ReadStreamDyn>))
    }
}

struct SftpReadStream {
    /// Keeps the connection open while the file is read.
    _lent: Lent,
    file: File,
    remaining: Option<u64>,
    path: String,
}

impl oio::ReadStream for SftpReadStream {
    async fn read(&mut self) -> Result<Buffer> {
        let wanted = self.remaining.map_or(READ_PIECE, |remaining| remaining.min(READ_PIECE as u64) as usize);
        if wanted == 0 {
            return Ok(Buffer::new());
        }
        let mut piece = BytesMut::with_capacity(wanted);
        while piece.len() < wanted {
            let read = (&mut self.file)
                .take((wanted - piece.len()) as u64)
                .read_buf(&mut piece)
                .await
                .map_err(io_error(format!("reading {}", self.path)))?;
            if read == 0 {
                break;
            }
        }
        if let Some(remaining) = &mut self.remaining {
            *remaining -= piece.len() as u64;
        }
        Ok(Buffer::from(piece.freeze()))
    }
}

/// Writes to a staged file, placed at its path when closed.
pub struct SftpWriter {
    service: SftpService,
    path: String,
    /// The source's modification time (Unix seconds; SFTP v3 holds 32 bits of them).
    modified: Option<u32>,
    open: Option<StagedFile>,
}

struct StagedFile {
    lent: Lent,
    file: File,
    staged: String,
    written: u64,
}

impl SftpWriter {
    async fn staged(&mut self) -> Result<&mut StagedFile> {
        if self.open.is_none() {
            let lent = self.service.link().await?;
            let staging = self.service.server_path(PARTIAL_DIRECTORY);
            self.service.make_directories(&lent, &staging).await?;
            self.service.core.swept.get_or_init(|| self.service.sweep(&lent, &staging)).await;
            if let Some((parent, _)) = self.path.rsplit_once('/') {
                self.service.make_directories(&lent, parent).await?;
            }
            let mut name = [0u8; 16];
            getrandom::fill(&mut name).map_err(|error| Error::new(ErrorKind::Unexpected, error.to_string()))?;
            let staged = format!("{staging}/{}.part", hex::encode(name));
            let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE | OpenFlags::EXCLUDE;
            let file = match lent.link.sftp.open_with_flags(staged.as_str(), flags).await {
                Ok(file) => file,
                Err(error) => return Err(self.service.failed(&lent, format!("creating {staged}"), error).await),
            };
            self.open = Some(StagedFile { lent, file, staged, written: 0 });
        }
        self.open.as_mut().ok_or_else(|| Error::new(ErrorKind::Unexpected, "sftp: no staged file"))
    }
}

impl oio::Write for SftpWriter {
    async fn write(&mut self, mut buffer: Buffer) -> Result<()> {
        let staged = self.staged().await?;
        while buffer.has_remaining() {
            let chunk = buffer.chunk();
            staged.file.write_all(chunk).await.map_err(io_error(format!("writing {}", staged.staged)))?;
            staged.written += chunk.len() as u64;
            let length = chunk.len();
            buffer.advance(length);
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<Metadata> {
        self.staged().await?;
        let Some(StagedFile { lent, mut file, staged, written }) = self.open.take() else {
            return Err(Error::new(ErrorKind::Unexpected, "sftp: no staged file"));
        };
        file.shutdown().await.map_err(io_error(format!("closing {staged}")))?;
        if let Some(modified) = self.modified {
            let times = FileAttributes { atime: Some(modified), mtime: Some(modified), ..FileAttributes::empty() };
            if let Err(error) = lent.link.sftp.set_metadata(staged.as_str(), times).await {
                return Err(self.service.failed(&lent, format!("setting the time of {staged}"), error).await);
            }
        }
        self.service.replace(&lent, &staged, &self.path).await?;
        Ok(MetadataBuilder::file(written).build())
    }

    async fn abort(&mut self) -> Result<()> {
        if let Some(StagedFile { lent, file, staged, .. }) = self.open.take() {
            drop(file);
            if let Err(error) = lent.link.sftp.remove_file(staged.as_str()).await
                && !is_not_found(&error)
            {
                return Err(self.service.failed(&lent, format!("removing {staged}"), error).await);
            }
        }
        Ok(())
    }
}

/// Lists one directory: files, and directories ending in `/`; links and special files are
/// left out, as on a local filesystem.
pub struct SftpLister {
    service: SftpService,
    prefix: String,
    entries: Option<std::vec::IntoIter<oio::Entry>>,
}

impl SftpLister {
    async fn read_directory(&self) -> Result<Vec<oio::Entry>> {
        let lent = self.service.link().await?;
        let directory = self.service.server_path(&self.prefix);
        let listing = match lent.link.sftp.read_dir(directory.as_str()).await {
            Ok(listing) => listing,
            Err(error) if is_not_found(&error) => return Ok(Vec::new()),
            Err(error) => return Err(self.service.failed(&lent, format!("listing {directory}"), error).await),
        };
        let mut entries = Vec::new();
        for entry in listing {
            let name = entry.file_name();
            if name == "." || name == ".." {
                continue;
            }
            let attributes = entry.metadata();
            let path = match attributes.file_type() {
                FileType::File => format!("{}{name}", self.prefix),
                FileType::Dir => format!("{}{name}/", self.prefix),
                FileType::Symlink | FileType::Other => {
                    tracing::warn!(directory, name, "skipping a symbolic link or special file");
                    continue;
                }
            };
            entries.push(oio::Entry::new(&path, metadata(&attributes)));
        }
        Ok(entries)
    }
}

impl oio::List for SftpLister {
    async fn next(&mut self) -> Result<Option<oio::Entry>> {
        if self.entries.is_none() {
            self.entries = Some(self.read_directory().await?.into_iter());
        }
        Ok(self.entries.as_mut().and_then(Iterator::next))
    }
}

/// Removes files (and empty directories, for paths ending in `/`).
pub struct SftpDeleter {
    service: SftpService,
}

impl oio::OneShotDelete for SftpDeleter {
    async fn delete_once(&self, path: String, _: OpDelete) -> Result<()> {
        let lent = self.service.link().await?;
        let server_path = self.service.server_path(&path);
        let removed = if path.ends_with('/') {
            lent.link.sftp.remove_dir(server_path.as_str()).await
        } else {
            lent.link.sftp.remove_file(server_path.as_str()).await
        };
        match removed {
            Ok(()) => Ok(()),
            Err(error) if is_not_found(&error) => Ok(()),
            Err(error) => Err(self.service.failed(&lent, format!("removing {server_path}"), error).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_paths_join_as_the_server_expects() {
        assert_eq!(normalize_root(None), "");
        assert_eq!(normalize_root(Some("/")), "/");
        assert_eq!(normalize_root(Some("/srv/data/")), "/srv/data/");
        assert_eq!(normalize_root(Some("exports")), "exports/");
    }
}
