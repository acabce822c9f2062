//! An HTTP PUT whose body streams, for providers whose OpenDAL service sends an upload in one
//! request from memory (WebDAV): objects of any size go in one request without being held
//! whole, in memory or anywhere else.

use bytes::Bytes;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

/// Pieces in flight between the engine and the request body.
const PIECES_IN_FLIGHT: usize = 4;

/// Why a streaming upload failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamingPutError {
    /// The request could not be sent or was cut.
    #[error("PUT {path}: {source}")]
    Request {
        /// The object's path.
        path: String,
        /// What reqwest said.
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("PUT {path}: the server answered {status}")]
    Status {
        /// The object's path.
        path: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
    },
    /// The URL could not be built.
    #[error("the endpoint {0:?} is not a URL that paths can be added to")]
    Endpoint(String),
    /// The task sending the request ended without an answer (it panicked or was cancelled).
    #[error("PUT {0}: the request stopped without an answer")]
    Stopped(String),
}

/// Where and how to PUT objects.
pub struct StreamingPut {
    client: reqwest::Client,
    endpoint: url::Url,
    authorization: Zeroizing<String>,
}

impl std::fmt::Debug for StreamingPut {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The authorization header is a credential: never printed.
        formatter.debug_struct("StreamingPut").field("endpoint", &self.endpoint.as_str()).finish_non_exhaustive()
    }
}

impl StreamingPut {
    /// PUTs under `endpoint` with the given `Authorization` header value.
    pub fn new(endpoint: &str, authorization: Zeroizing<String>) -> Result<Self, StreamingPutError> {
        let endpoint = url::Url::parse(endpoint).map_err(|_| StreamingPutError::Endpoint(endpoint.to_owned()))?;
        if endpoint.cannot_be_a_base() {
            return Err(StreamingPutError::Endpoint(endpoint.to_string()));
        }
        Ok(Self { client: reqwest::Client::new(), endpoint, authorization })
    }

    /// The URL of `path` (`a/b c`), each segment percent-encoded.
    fn url(&self, path: &str) -> Result<url::Url, StreamingPutError> {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .map_err(|()| StreamingPutError::Endpoint(self.endpoint.to_string()))?
            .pop_if_empty()
            .extend(path.split('/'));
        Ok(url)
    }

    /// Starts a PUT of `length` bytes to `path`; the body is what [`StreamingUpload::write`] sends.
    pub fn begin(&self, path: &str, length: u64) -> Result<StreamingUpload, StreamingPutError> {
        let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(PIECES_IN_FLIGHT);
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|piece| (piece, receiver))
        }));
        let request = self
            .client
            .put(self.url(path)?)
            .header(reqwest::header::AUTHORIZATION, self.authorization.as_str())
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(body)
            .send();
        let response = tokio::spawn(request);
        Ok(StreamingUpload { path: path.to_owned(), sender: Some(sender), response })
    }
}

/// One PUT in progress.
pub struct StreamingUpload {
    path: String,
    sender: Option<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    response: tokio::task::JoinHandle<Result<reqwest::Response, reqwest::Error>>,
}

impl StreamingUpload {
    /// Sends the next piece of the body.
    pub async fn write(&mut self, piece: Bytes) -> Result<(), StreamingPutError> {
        let sent = match &self.sender {
            Some(sender) => sender.send(Ok(piece)).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The request ended before its body did: its answer says why.
        self.sender = None;
        match (&mut self.response).await {
            Ok(Err(source)) => Err(StreamingPutError::Request { path: self.path.clone(), source }),
            Ok(Ok(response)) => Err(StreamingPutError::Status { path: self.path.clone(), status: response.status() }),
            Err(_) => Err(StreamingPutError::Stopped(self.path.clone())),
        }
    }

    /// Ends the body and waits for the server's answer.
    pub async fn finish(mut self) -> Result<(), StreamingPutError> {
        self.sender = None;
        let response = match (&mut self.response).await {
            Ok(response) => {
                response.map_err(|source| StreamingPutError::Request { path: self.path.clone(), source })?
            }
            Err(_) => return Err(StreamingPutError::Stopped(self.path.clone())),
        };
        if !response.status().is_success() {
            return Err(StreamingPutError::Status { path: self.path, status: response.status() });
        }
        Ok(())
    }

    /// Cuts the request: the body ends with an error, so the server never takes it as complete.
    pub async fn abort(mut self) {
        if let Some(sender) = self.sender.take() {
            let _ = sender.send(Err(std::io::Error::other("upload aborted"))).await;
        }
        self.response.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_segment_by_segment_under_the_endpoint() {
        let put = StreamingPut::new("http://127.0.0.1:1/dav/files/", Zeroizing::new("Basic x".into())).unwrap();
        let url = put.url("dir/a b/100% sure+plus#hash?query.txt").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:1/dav/files/dir/a%20b/100%25%20sure+plus%23hash%3Fquery.txt");
        assert!(!format!("{put:?}").contains("Basic"));
    }
}
