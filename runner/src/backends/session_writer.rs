//! The writer the drives share: a small file goes in one request; a larger one in an upload
//! session, in chunks of a fixed size. Bytes leave the buffer only once sent, so a failed
//! chunk is sent again when the retry layer repeats the write.

use std::future::Future;

use bytes::{Buf, Bytes, BytesMut};
use opendal::raw::oio;
use opendal::{Buffer, Metadata, Result};

/// One file's upload to a drive.
pub trait Upload: Send + Sync + Unpin + 'static {
    /// Uploads the whole file (at most [`SessionWriter`]'s `whole_limit` bytes) in one request.
    fn whole(&mut self, content: Bytes) -> impl Future<Output = Result<Metadata>> + Send;
    /// Sends `chunk`, the bytes from `offset`, starting the session on the first call.
    fn chunk(&mut self, offset: u64, chunk: Bytes) -> impl Future<Output = Result<()>> + Send;
    /// Ends the session with its last bytes (maybe none), sent from `offset`.
    fn finish(&mut self, offset: u64, last: Bytes) -> impl Future<Output = Result<Metadata>> + Send;
    /// Drops a session that will not finish, so the drive frees what arrived.
    fn cancel(&mut self) -> impl Future<Output = Result<()>> + Send;
}

/// Buffers a file's bytes and hands them to an [`Upload`].
pub struct SessionWriter<U> {
    upload: U,
    /// The largest file sent in one request.
    whole_limit: usize,
    /// The size of every chunk but the last.
    chunk: usize,
    buffer: BytesMut,
    /// Whether the bytes go in a session (the file outgrew one request).
    in_session: bool,
    sent: u64,
}

impl<U: Upload> SessionWriter<U> {
    /// A writer sending files of up to `whole_limit` bytes in one request, larger ones in
    /// chunks of `chunk` bytes.
    pub fn new(upload: U, whole_limit: usize, chunk: usize) -> Self {
        Self { upload, whole_limit, chunk, buffer: BytesMut::new(), in_session: false, sent: 0 }
    }

    async fn send_whole_chunks(&mut self) -> Result<()> {
        self.in_session |= self.buffer.len() > self.whole_limit;
        while self.in_session && self.buffer.len() >= self.chunk {
            let chunk = Bytes::copy_from_slice(&self.buffer[..self.chunk]);
            self.upload.chunk(self.sent, chunk).await?;
            self.buffer.advance(self.chunk);
            self.sent += self.chunk as u64;
        }
        Ok(())
    }
}

impl<U: Upload> oio::Write for SessionWriter<U> {
    /// A failed call leaves the writer as it was, so the retry layer can repeat it.
    async fn write(&mut self, buffer: Buffer) -> Result<()> {
        let before = self.buffer.len();
        for chunk in buffer {
            self.buffer.extend_from_slice(&chunk);
        }
        let added = self.buffer.len() - before;
        let sent = self.sent;
        let result = self.send_whole_chunks().await;
        if result.is_err() && self.sent == sent {
            self.buffer.truncate(self.buffer.len() - added);
        }
        result
    }

    /// The rest stays buffered until it is sent, so a retried close sends it again.
    async fn close(&mut self) -> Result<Metadata> {
        let rest = Bytes::copy_from_slice(&self.buffer);
        let closed = match self.in_session {
            false => self.upload.whole(rest).await?,
            true => self.upload.finish(self.sent, rest).await?,
        };
        self.buffer.clear();
        Ok(closed)
    }

    async fn abort(&mut self) -> Result<()> {
        self.buffer.clear();
        match self.in_session {
            false => Ok(()),
            true => self.upload.cancel().await,
        }
    }
}
