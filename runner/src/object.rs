//! What the engine knows about one object, and the checksums it computes.

use md5::{Digest, Md5};

use crate::backends::ReportedChecksum;

/// One object as a listing (or stat) describes it. `key` is relative to the job's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The path below the job's source or destination path.
    pub key: String,
    /// Length in bytes.
    pub size: u64,
    /// Last modification, when the backend reports it.
    pub modified: Option<jiff::Timestamp>,
    /// The checksum the provider computed over the object, in S3 ETag form: an MD5 in hex, or
    /// `<md5>-<parts>` for an S3 multipart upload ([`reported_checksum`]); absent where the
    /// provider computes none comparable.
    pub checksum: Option<String>,
}

impl ObjectInfo {
    /// The MD5 of the content, when the provider's checksum is one.
    pub fn md5(&self) -> Option<&str> {
        self.checksum.as_deref().filter(|etag| etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// A drive's own hash of the content, when that is the checksum: its kind is told by its
    /// length, as no two kinds (nor MD5) share one.
    pub fn drive_hash(&self) -> Option<(DriveHash, &str)> {
        let hash = self.checksum.as_deref().filter(|hash| hash.bytes().all(|b| b.is_ascii_hexdigit()))?;
        DriveHash::ALL.into_iter().find(|kind| kind.hex_length() == hash.len()).map(|kind| (kind, hash))
    }

    /// The number of parts of a multipart ETag (`<md5>-N`).
    pub fn multipart_parts(&self) -> Option<u64> {
        let (digest, parts) = self.checksum.as_deref()?.split_once('-')?;
        (digest.len() == 32).then(|| parts.parse().ok()).flatten()
    }
}

/// The checksum a provider reports in an object's metadata, in the form of
/// [`ObjectInfo::checksum`]: S3's ETag, or the service-computed `Content-MD5` (base64) as hex.
pub fn reported_checksum(metadata: &opendal::Metadata, kind: ReportedChecksum) -> Option<String> {
    use base64::Engine;
    match kind {
        ReportedChecksum::S3Etag => metadata.etag().map(unquote),
        ReportedChecksum::ContentMd5 { .. } => {
            let decoded = base64::engine::general_purpose::STANDARD.decode(metadata.content_md5()?).ok()?;
            (decoded.len() == 16).then(|| hex::encode(decoded))
        }
        // The drive services put the item's hash, as hex, where an ETag would go.
        ReportedChecksum::DriveHash(_) => metadata.etag().map(str::to_ascii_lowercase),
        ReportedChecksum::None => None,
    }
}

/// Strips the quotes S3 puts around ETags.
pub fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_ascii_lowercase()
}

/// A hash a cloud drive computes over every file, in a form of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveHash {
    /// OneDrive's QuickXorHash (160 bits).
    QuickXor,
    /// Dropbox's content hash: SHA-256 over the SHA-256 of every 4 MiB block.
    DropboxContent,
}

impl DriveHash {
    /// Every kind.
    pub const ALL: [Self; 2] = [Self::QuickXor, Self::DropboxContent];

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::QuickXor => "QuickXorHash",
            Self::DropboxContent => "Dropbox content hash",
        }
    }

    /// Hex digits in the hash.
    pub fn hex_length(self) -> usize {
        match self {
            Self::QuickXor => 40,
            Self::DropboxContent => 64,
        }
    }
}

/// A [`DriveHash`] being computed.
enum DriveHasher {
    QuickXor(quickxorhash::QuickXorHash),
    DropboxContent(Box<DropboxContentHasher>),
}

impl DriveHasher {
    fn new(kind: DriveHash) -> Self {
        match kind {
            DriveHash::QuickXor => Self::QuickXor(quickxorhash::QuickXorHash::new()),
            DriveHash::DropboxContent => Self::DropboxContent(Box::default()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::QuickXor(hasher) => hasher.update(data),
            Self::DropboxContent(hasher) => hasher.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Self::QuickXor(mut hasher) => hex::encode(hasher.finalize()),
            Self::DropboxContent(hasher) => hasher.finish(),
        }
    }
}

/// Dropbox's content hash, as its reference implementation computes it: the SHA-256 of each
/// 4 MiB block, then the SHA-256 of those digests in order. (No maintained crate offers it.)
#[derive(Default)]
pub struct DropboxContentHasher {
    overall: sha2::Sha256,
    block: sha2::Sha256,
    block_filled: usize,
}

impl DropboxContentHasher {
    /// Dropbox's block size.
    const BLOCK: usize = 4 << 20;

    /// Hashes the next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        use sha2::Digest as _;
        while !data.is_empty() {
            let take = (Self::BLOCK - self.block_filled).min(data.len());
            self.block.update(&data[..take]);
            self.block_filled += take;
            data = &data[take..];
            if self.block_filled == Self::BLOCK {
                let block = std::mem::take(&mut self.block).finalize();
                self.overall.update(block);
                self.block_filled = 0;
            }
        }
    }

    /// The hash, hex.
    pub fn finish(mut self) -> String {
        use sha2::Digest as _;
        if self.block_filled > 0 {
            let block = self.block.finalize();
            self.overall.update(block);
        }
        hex::encode(self.overall.finalize())
    }
}

/// Which digests to compute while bytes stream past.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestSet {
    /// BLAKE3, for comparing two sides Ferry hashes itself.
    pub blake3: bool,
    /// MD5 of the whole content (single-part ETags, Content-MD5).
    pub md5: bool,
    /// MD5 per part of this size, for multipart ETags.
    pub part_size: Option<u64>,
    /// A drive's own hash.
    pub drive_hash: Option<DriveHash>,
}

impl DigestSet {
    /// BLAKE3 alone.
    pub const BLAKE3: Self = Self { blake3: true, md5: false, part_size: None, drive_hash: None };
    /// Only the MD5 of the whole object.
    pub const MD5: Self = Self { blake3: false, md5: true, part_size: None, drive_hash: None };

    /// Only a drive's hash.
    pub const fn drive(kind: DriveHash) -> Self {
        Self { blake3: false, md5: false, part_size: None, drive_hash: Some(kind) }
    }
}

/// Digests of a byte stream: those a [`DigestSet`] asks for.
pub struct Hasher {
    blake3: Option<blake3::Hasher>,
    md5: Option<Md5>,
    part_size: Option<u64>,
    part: Md5,
    part_filled: u64,
    part_digests: Vec<[u8; 16]>,
    drive_hash: Option<DriveHasher>,
    length: u64,
}

/// The finished digests of one byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    /// BLAKE3, hex, when computed.
    pub blake3: Option<String>,
    /// MD5, hex, when computed.
    pub md5: Option<String>,
    /// The multipart ETag (`md5-of-part-md5s-N`) for the part size, when computed and the
    /// content spans more than one part.
    pub multipart_etag: Option<String>,
    /// A drive's hash, hex, when computed.
    pub drive_hash: Option<String>,
    /// Bytes hashed.
    pub length: u64,
}

impl Hasher {
    /// A hasher computing `set`.
    pub fn new(set: DigestSet) -> Self {
        Self {
            blake3: set.blake3.then(blake3::Hasher::new),
            md5: set.md5.then(Md5::new),
            part_size: set.part_size.filter(|size| *size > 0),
            part: Md5::new(),
            part_filled: 0,
            part_digests: Vec::new(),
            drive_hash: set.drive_hash.map(DriveHasher::new),
            length: 0,
        }
    }

    /// Hashes the next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.length += data.len() as u64;
        if let Some(blake3) = &mut self.blake3 {
            blake3.update(data);
        }
        if let Some(md5) = &mut self.md5 {
            md5.update(data);
        }
        if let Some(drive_hash) = &mut self.drive_hash {
            drive_hash.update(data);
        }
        if let Some(part_size) = self.part_size {
            while !data.is_empty() {
                let take = ((part_size - self.part_filled) as usize).min(data.len());
                self.part.update(&data[..take]);
                self.part_filled += take as u64;
                data = &data[take..];
                if self.part_filled == part_size {
                    self.part_digests.push(std::mem::replace(&mut self.part, Md5::new()).finalize().into());
                    self.part_filled = 0;
                }
            }
        }
    }

    /// The digests of everything hashed.
    pub fn finish(mut self) -> Digests {
        if self.part_filled > 0 {
            self.part_digests.push(self.part.finalize().into());
        }
        let multipart_etag = (self.part_digests.len() > 1).then(|| {
            let mut combined = Md5::new();
            for digest in &self.part_digests {
                combined.update(digest);
            }
            format!("{}-{}", hex::encode(combined.finalize()), self.part_digests.len())
        });
        Digests {
            blake3: self.blake3.map(|blake3| blake3.finalize().to_hex().to_string()),
            md5: self.md5.map(|md5| hex::encode(md5.finalize())),
            multipart_etag,
            drive_hash: self.drive_hash.map(DriveHasher::finish),
            length: self.length,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_part_etags_are_md5s() {
        let object = ObjectInfo {
            key: "k".into(),
            size: 1,
            modified: None,
            checksum: Some(unquote("\"900150983CD24FB0D6963F7D28E17F72\"")),
        };
        assert_eq!(object.md5(), Some("900150983cd24fb0d6963f7d28e17f72"));
        assert_eq!(object.multipart_parts(), None);
        let multipart = ObjectInfo { checksum: Some("0123456789abcdef0123456789abcdef-3".into()), ..object };
        assert_eq!(multipart.md5(), None);
        assert_eq!(multipart.multipart_parts(), Some(3));
    }

    #[test]
    fn multipart_etag_matches_the_s3_formula() {
        let data: Vec<u8> = (0..25u32).map(|i| i as u8).collect();
        let mut hasher = Hasher::new(DigestSet { blake3: true, md5: true, part_size: Some(10), drive_hash: None });
        hasher.update(&data[..7]);
        hasher.update(&data[7..]);
        let digests = hasher.finish();
        let mut combined = Md5::new();
        for part in data.chunks(10) {
            let digest: [u8; 16] = Md5::digest(part).into();
            combined.update(digest);
        }
        assert_eq!(digests.multipart_etag, Some(format!("{}-3", hex::encode(combined.finalize()))));
        assert_eq!(digests.md5, Some(hex::encode(Md5::digest(&data))));
        assert_eq!(digests.blake3, Some(blake3::hash(&data).to_hex().to_string()));
        assert_eq!(digests.length, 25);
    }

    #[test]
    fn dropbox_content_hash_hashes_the_block_hashes() {
        use sha2::{Digest as _, Sha256};
        let data: Vec<u8> = (0..(10 << 20) + 123).map(|i: u32| (i % 251) as u8).collect();
        let mut hasher = DropboxContentHasher::default();
        for chunk in data.chunks(1_000_003) {
            hasher.update(chunk);
        }
        let mut blocks = Sha256::new();
        for block in data.chunks(4 << 20) {
            blocks.update(Sha256::digest(block));
        }
        assert_eq!(hasher.finish(), hex::encode(blocks.finalize()));
        // No blocks at all: the hash of nothing.
        assert_eq!(
            DropboxContentHasher::default().finish(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
