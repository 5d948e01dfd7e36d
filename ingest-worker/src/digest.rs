//! File digests: how an unchanged file is recognised, and how a polls file that only grew is recognised.
//! Computed as a stream ([`FileDigest::of_reader`]), so a file of any size costs one buffer.

use std::io::Read;

use sha2::{Digest as _, Sha256};

/// Bytes hashed per read.
const BUFFER_BYTES: usize = 1 << 20;

/// Size and SHA-256 of a file's bytes, and optionally of a prefix of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub bytes: u64,
    /// Lowercase hex, 64 characters (the width of `loads.file_digest`).
    pub hex: String,
    /// `(length, digest)` of the first `length` bytes, when asked for and shorter than the file.
    pub prefix: Option<(u64, String)>,
    /// How many line ends (`\n`) the prefix holds, counted on the way: the appended rows' line numbers
    /// start after them.
    pub prefix_line_ends: u64,
    /// Whether the prefix's last byte is a line end (an appended part can start only after one).
    pub prefix_ends_a_line: bool,
}

impl FileDigest {
    /// Digests `bytes`; with `prefix_len` set and below the length, also its first `prefix_len` bytes.
    pub fn of(bytes: &[u8], prefix_len: Option<u64>) -> FileDigest {
        let mut hashing = Hashing::new(prefix_len);
        hashing.update(bytes);
        hashing.finish()
    }

    /// [`FileDigest::of`] the bytes `input` yields, read [`BUFFER_BYTES`] at a time. The prefix state is a
    /// copy of the running hash taken on the way, so the file is read once.
    pub fn of_reader(mut input: impl Read, prefix_len: Option<u64>) -> std::io::Result<FileDigest> {
        let mut hashing = Hashing::new(prefix_len);
        let mut buffer = vec![0u8; BUFFER_BYTES];
        loop {
            let n = match input.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hashing.update(&buffer[..n]);
        }
        Ok(hashing.finish())
    }

    /// Whether this file is the one a load recorded with `bytes` and `digest`.
    pub fn same_as(&self, bytes: Option<u64>, digest: Option<&str>) -> bool {
        bytes == Some(self.bytes) && digest == Some(self.hex.as_str())
    }
}

/// A digest under way: the whole file's hash, and the prefix's until `prefix_len` bytes went by.
struct Hashing {
    whole: Sha256,
    prefix_len: Option<u64>,
    prefix: Option<(u64, String)>,
    seen: u64,
    prefix_line_ends: u64,
    prefix_ends_a_line: bool,
}

impl Hashing {
    fn new(prefix_len: Option<u64>) -> Self {
        Hashing {
            whole: Sha256::new(),
            prefix_len: prefix_len.filter(|&n| n > 0),
            prefix: None,
            seen: 0,
            prefix_line_ends: 0,
            prefix_ends_a_line: false,
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        if let Some(len) = self.prefix_len.filter(|_| self.prefix.is_none()) {
            let before_cut = usize::try_from(len - self.seen).map_or(bytes.len(), |n| n.min(bytes.len()));
            let (head, tail) = bytes.split_at(before_cut);
            self.whole.update(head);
            self.seen += head.len() as u64;
            self.prefix_line_ends += memchr::memchr_iter(b'\n', head).count() as u64;
            if let Some(&last) = head.last() {
                self.prefix_ends_a_line = last == b'\n';
            }
            if self.seen == len && !tail.is_empty() {
                // A prefix is only worth naming when something follows it.
                self.prefix = Some((len, hex(&self.whole.clone().finalize())));
            }
            bytes = tail;
        }
        self.whole.update(bytes);
        self.seen += bytes.len() as u64;
    }

    fn finish(self) -> FileDigest {
        FileDigest {
            bytes: self.seen,
            hex: hex(&self.whole.finalize()),
            prefix: self.prefix,
            prefix_line_ends: self.prefix_line_ends,
            prefix_ends_a_line: self.prefix_ends_a_line,
        }
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
        assert_eq!((after.prefix_line_ends, after.prefix_ends_a_line), (2, true));
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

    /// Yields a few bytes per read, so the prefix's end falls inside a read.
    struct Dribble<'a>(&'a [u8]);

    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(out.len()).min(5);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_streamed_digest_equals_the_digest_of_the_bytes() {
        let bytes: Vec<u8> = (0..3_000u32).flat_map(|i| format!("row {i}\n").into_bytes()).collect();
        for prefix in [None, Some(1), Some(7), Some(1234), Some(bytes.len() as u64 - 1), Some(bytes.len() as u64)] {
            let streamed = FileDigest::of_reader(Dribble(&bytes), prefix).expect("reads");
            assert_eq!(streamed, FileDigest::of(&bytes, prefix), "prefix {prefix:?}");
            if let Some((len, hex)) = &streamed.prefix {
                let head = &bytes[..*len as usize];
                assert_eq!(hex, &FileDigest::of(head, None).hex);
                assert_eq!(streamed.prefix_line_ends, memchr::memchr_iter(b'\n', head).count() as u64);
            }
        }
        let big = vec![b'x'; 3 * BUFFER_BYTES + 17];
        assert_eq!(FileDigest::of_reader(big.as_slice(), Some(2 * BUFFER_BYTES as u64 + 3)).expect("reads"), {
            FileDigest::of(&big, Some(2 * BUFFER_BYTES as u64 + 3))
        });
    }
}
