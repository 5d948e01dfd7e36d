//! File digests: how an unchanged file is recognised, and how a polls file that only grew is recognised.

use sha2::{Digest as _, Sha256};

/// Size and SHA-256 of a file's bytes, and optionally of a prefix of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub bytes: u64,
    /// Lowercase hex, 64 characters (the width of `loads.file_digest`).
    pub hex: String,
    /// `(length, digest)` of the first `length` bytes, when asked for and shorter than the file.
    pub prefix: Option<(u64, String)>,
}

impl FileDigest {
    /// Digests `bytes`; with `prefix_len` set and below the length, also its first `prefix_len` bytes (in the
    /// same pass: the prefix state is a copy of the running hash taken on the way).
    pub fn of(bytes: &[u8], prefix_len: Option<u64>) -> FileDigest {
        let mut hasher = Sha256::new();
        let split = prefix_len.and_then(|n| usize::try_from(n).ok()).filter(|&n| n > 0 && n < bytes.len());
        let prefix = split.map(|n| {
            hasher.update(&bytes[..n]);
            (n as u64, hex(&hasher.clone().finalize()))
        });
        hasher.update(&bytes[split.unwrap_or(0)..]);
        FileDigest { bytes: bytes.len() as u64, hex: hex(&hasher.finalize()), prefix }
    }

    /// Whether this file is the one a load recorded with `bytes` and `digest`.
    pub fn same_as(&self, bytes: Option<u64>, digest: Option<&str>) -> bool {
        bytes == Some(self.bytes) && digest == Some(self.hex.as_str())
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_digest_is_the_digest_of_the_shorter_file() {
        let old = b"store_id,status,timestamp_utc\na,active,2023-01-01 00:00:00\n";
        let mut grown = old.to_vec();
        grown.extend_from_slice(b"b,inactive,2023-01-01 00:00:01\n");
        let before = FileDigest::of(old, None);
        let after = FileDigest::of(&grown, Some(before.bytes));
        assert_eq!(after.prefix, Some((before.bytes, before.hex.clone())));
        assert_ne!(after.hex, before.hex);
        assert_eq!(after.hex, FileDigest::of(&grown, None).hex, "the prefix does not change the whole digest");
    }

    #[test]
    fn a_known_digest() {
        assert_eq!(
            FileDigest::of(b"abc", None).hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(FileDigest::of(b"abc", Some(3)).prefix, None, "a prefix as long as the file is the file");
    }
}
