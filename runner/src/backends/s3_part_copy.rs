//! S3 copies of objects over the 5 GiB one `CopyObject` takes: a multipart upload whose parts
//! the service copies from the source (`UploadPartCopy`), in the source's own part size where
//! it can be learned, so the copy's ETag is the source's and proves it.

use bytes::Bytes;
use futures::StreamExt;

use super::s3_copy::{S3Account, element, etag};
use super::server_side_copy::{CopiedOnServer, CopyError, send_signed};

/// S3's smallest part (but the last).
const MIN_PART: u64 = 5 << 20;
/// S3's largest part.
const MAX_PART: u64 = 5 << 30;
/// S3's most parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// The part size when the source's cannot be used.
const DEFAULT_PART: u64 = 512 << 20;
/// Part copies sent at once; each is the service's work, not the runner's.
const PARTS_IN_FLIGHT: usize = 4;

/// What the source's `HEAD ?partNumber=1` tells.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SourceLayout {
    /// The size of its first part, when it was uploaded in parts.
    pub first_part: Option<u64>,
    /// Its media type, for the copy.
    pub content_type: Option<String>,
}

/// The part size for copying `size` bytes: the source's own when S3 allows it (so the copy's
/// multipart ETag equals the source's), else 512 MiB, or more when 10,000 parts need it.
pub fn part_size_for(size: u64, first_part: Option<u64>) -> u64 {
    match first_part {
        Some(part) if (MIN_PART..=MAX_PART).contains(&part) && part < size && size.div_ceil(part) <= MAX_PARTS => part,
        _ => DEFAULT_PART.max(size.div_ceil(MAX_PARTS)).min(MAX_PART),
    }
}

/// The body of `CompleteMultipartUpload` for the parts' ETags, in order.
pub fn completion(etags: &[String]) -> String {
    let parts: String = (1..)
        .zip(etags)
        .map(|(number, etag)| format!("<Part><PartNumber>{number}</PartNumber><ETag>\"{etag}\"</ETag></Part>"))
        .collect();
    format!("<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>")
}

impl S3Account {
    /// The source object's first part and media type (`HEAD ?partNumber=1`).
    pub async fn source_layout(&self, source: &S3Account, key: &str) -> SourceLayout {
        let url = format!("{}?partNumber=1", source.object_url(key));
        let Ok(request) = http::Request::head(url).body(Bytes::new()) else { return SourceLayout::default() };
        let Ok(response) = send_signed(&source.signer, &source.client, request).await else {
            return SourceLayout::default();
        };
        let header = |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
        // Only an object uploaded in parts has a part count; for others the length is the whole.
        let first_part = header("x-amz-mp-parts-count")
            .and_then(|_| header("content-length"))
            .and_then(|length| length.parse().ok())
            .filter(|_| response.status().is_success());
        SourceLayout { first_part, content_type: header("content-type") }
    }

    /// Copies `source_key` of `source` (`size` bytes) to `key` in parts of `part_size`; an
    /// upload that fails is aborted, so no parts are left behind.
    pub async fn copy_in_parts(
        &self,
        source: &S3Account,
        source_key: &str,
        key: &str,
        size: u64,
        layout: &SourceLayout,
    ) -> Result<CopiedOnServer, CopyError> {
        let part_size = part_size_for(size, layout.first_part);
        let url = self.object_url(key);
        let headers: Vec<(&str, String)> =
            layout.content_type.iter().map(|content_type| ("content-type", content_type.clone())).collect();
        let created = self.send(http::Method::POST, format!("{url}?uploads"), &headers, Bytes::new()).await?;
        let upload = element(&created, "UploadId")
            .ok_or_else(|| CopyError::Failed("no UploadId in CreateMultipartUpload's answer".to_owned()))?;
        let upload_query = utf8(&upload);
        let copy_source = source.copy_source(source_key);
        let parts = size.div_ceil(part_size);
        let copied: Vec<Result<String, CopyError>> = futures::stream::iter(0..parts)
            .map(|index| {
                let (start, end) = (index * part_size, ((index + 1) * part_size).min(size) - 1);
                let headers = [
                    ("x-amz-copy-source", copy_source.clone()),
                    ("x-amz-copy-source-range", format!("bytes={start}-{end}")),
                ];
                let url = format!("{url}?partNumber={}&uploadId={upload_query}", index + 1);
                async move {
                    let answer = self.send(http::Method::PUT, url, &headers, Bytes::new()).await?;
                    etag(&answer).ok_or_else(|| CopyError::Failed("no ETag in UploadPartCopy's answer".to_owned()))
                }
            })
            .buffered(PARTS_IN_FLIGHT)
            .collect()
            .await;
        let completed = match copied.into_iter().collect::<Result<Vec<String>, CopyError>>() {
            Ok(etags) => {
                let body = Bytes::from(completion(&etags));
                self.send(http::Method::POST, format!("{url}?uploadId={upload_query}"), &[], body).await
            }
            Err(error) => Err(error),
        };
        match completed {
            Ok(answer) => Ok(CopiedOnServer { checksum: etag(&answer) }),
            Err(error) => {
                let aborted =
                    self.send(http::Method::DELETE, format!("{url}?uploadId={upload_query}"), &[], Bytes::new()).await;
                if let Err(abort) = aborted {
                    tracing::warn!(%abort, "a failed multipart copy could not be aborted; its parts stay until a lifecycle rule removes them");
                }
                Err(error)
            }
        }
    }
}

/// An upload ID as a query value.
fn utf8(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_follow_the_source_where_s3_allows() {
        const GIB: u64 = 1 << 30;
        assert_eq!(part_size_for(12 * GIB, Some(100 << 20)), 100 << 20);
        // No parts known, a first part S3 refuses, or too many parts: S3's limits rule.
        assert_eq!(part_size_for(12 * GIB, None), 512 << 20);
        assert_eq!(part_size_for(12 * GIB, Some(1 << 20)), 512 << 20);
        assert_eq!(part_size_for(12 * GIB, Some(6 * GIB)), 512 << 20);
        assert_eq!(part_size_for(5000 * GIB, Some(5 << 20)), (5000 * GIB).div_ceil(MAX_PARTS));
    }

    #[test]
    fn completion_lists_the_parts_in_order() {
        assert_eq!(
            completion(&["a1".into(), "b2".into()]),
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"a1\"</ETag></Part>\
             <Part><PartNumber>2</PartNumber><ETag>\"b2\"</ETag></Part></CompleteMultipartUpload>"
        );
    }
}
