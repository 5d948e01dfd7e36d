//! The polls file: the big one (1.9 M rows in the real data), so it is parsed in parallel chunks.

use std::io::Read;
use std::path::Path;

use super::{
    FUTURE_TOLERANCE_MICROS, FileKind, FileSummary, IdMap, InputError, Poll, PollsFile, RejectReason, StoreIds,
    column_positions, display_name, line_ends_leading, open_regular, parse, record_start_line, store_id, trim,
};

/// Below this size one thread reads faster than two can start.
const PARALLEL_FROM_BYTES: usize = 4 << 20;
/// How much of the file is held at once while streaming: one such piece is split at line ends and parsed
/// in parallel, then dropped. Twice [`PARALLEL_FROM_BYTES`], so two cores each get a piece worth a thread.
pub const STREAM_CHUNK_BYTES: usize = 8 << 20;
/// Counted in the summary's notes for every valid poll older than the retention window.
pub const NOTE_OLDER_THAN_RETENTION: &str = "polls older than the retention window (skipped)";

/// Polls older than `window` before the newest poll are not kept (the ingest's retention). The newest
/// poll is the later of `newest_known` (what the database already holds) and the newest valid poll of
/// the file, so a poll exactly `window` before it is kept and one a microsecond older is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub window: i64,
    pub newest_known: Option<i64>,
}

/// Reads a polls file. `loaded_at` (µs since the epoch) is the moment of loading: polls more than an hour
/// after it are rejected. New store ids are added to `stores`.
pub fn read_polls(path: &Path, stores: &mut StoreIds, loaded_at: i64) -> Result<PollsFile, InputError> {
    let (file, _) = open_regular(path)?;
    read_polls_from(path, file, stores, loaded_at, None)
}

/// [`read_polls`] on bytes already in memory; `path` only names the file in messages.
pub fn read_polls_bytes(
    path: &Path,
    bytes: &[u8],
    stores: &mut StoreIds,
    loaded_at: i64,
) -> Result<PollsFile, InputError> {
    read_polls_from(path, bytes, stores, loaded_at, None)
}

/// [`read_polls`] from a stream, holding about [`STREAM_CHUNK_BYTES`] of text at a time (plus the
/// accepted polls, 16 bytes each). Each piece is cut at a line end and parsed on every core; the line
/// numbers, rejections and the last-wins dedup are those of reading the whole file at once. With
/// `retention`, valid polls older than its window are counted under [`NOTE_OLDER_THAN_RETENTION`] and
/// dropped as they are read.
pub fn read_polls_from<R: Read>(
    path: &Path,
    input: R,
    stores: &mut StoreIds,
    loaded_at: i64,
    retention: Option<Retention>,
) -> Result<PollsFile, InputError> {
    read_in_pieces(path, input, stores, loaded_at, retention, STREAM_CHUNK_BYTES)
}

/// [`read_polls_from`] holding about `piece` bytes at a time (small in tests, to cross many cuts).
pub(crate) fn read_in_pieces<R: Read>(
    path: &Path,
    mut input: R,
    stores: &mut StoreIds,
    loaded_at: i64,
    retention: Option<Retention>,
    piece: usize,
) -> Result<PollsFile, InputError> {
    let unreadable = |source| InputError::Unreadable { file: path.to_owned(), source };
    let mut buf = Vec::with_capacity(piece.min(STREAM_CHUNK_BYTES));
    let mut at_end = fill(&mut input, &mut buf, piece).map_err(unreadable)?;
    // The header must be whole before it is judged: read on while it runs to the end of what is held.
    let (columns, data_start) = loop {
        if !at_end && header_end(&buf).is_none_or(|end| end >= buf.len()) {
            let grown = buf.len() + piece;
            at_end = fill(&mut input, &mut buf, grown).map_err(unreadable)?;
            continue;
        }
        break header(path, &buf)?;
    };
    let mut line = 2 + memchr::memchr_iter(b'\n', &buf[..data_start]).count() as u64 - 1;
    buf.drain(..data_start);
    let mut read = StreamedPolls {
        cols: [columns[0], columns[1], columns[2]],
        latest_allowed: loaded_at.saturating_add(FUTURE_TOLERANCE_MICROS),
        retention,
        newest: retention.and_then(|r| r.newest_known),
        summary: FileSummary { file: display_name(path), ..FileSummary::default() },
        polls: Vec::new(),
        skipped_as_old: 0,
    };
    while !(buf.is_empty() && at_end) {
        if !at_end && buf.len() < piece {
            at_end = fill(&mut input, &mut buf, piece).map_err(unreadable)?;
        }
        let cut = if at_end {
            buf.len()
        } else {
            match memchr::memrchr(b'\n', &buf) {
                Some(last) => last + 1,
                None => {
                    // One line longer than a piece: hold more until it ends.
                    let grown = buf.len() + piece;
                    at_end = fill(&mut input, &mut buf, grown).map_err(unreadable)?;
                    continue;
                }
            }
        };
        if memchr::memchr(b'"', &buf[..cut]).is_some() {
            // A quote can hide a line end inside a field, so no cut after it is safe: the rest of the file
            // is read by one CSV reader, streaming (the lines before the quote were cut safely).
            let rest = RecentBytes::new(std::io::Cursor::new(std::mem::take(&mut buf)).chain(input));
            let mut chunk = parse_chunk(rest, stores, 0, line, read.cols, read.latest_allowed, read.retention_state());
            if let Some(source) = chunk.io_error.take() {
                return Err(unreadable(source));
            }
            read.absorb(stores, chunk);
            break;
        }
        read.parse_in_parallel(stores, &buf[..cut], line);
        line += memchr::memchr_iter(b'\n', &buf[..cut]).count() as u64;
        buf.drain(..cut);
    }
    Ok(read.finish(stores))
}

/// Appends to `buf` until it holds `target` bytes or the input ends; returns whether it ended.
fn fill(input: &mut impl Read, buf: &mut Vec<u8>, target: usize) -> std::io::Result<bool> {
    let want = target.saturating_sub(buf.len());
    let got = input.by_ref().take(want as u64).read_to_end(buf)?;
    Ok(got < want)
}

/// Where the header record ends, if it ends inside `bytes` (a CSV reader at the end of its input also
/// ends the record, so "inside" means before the last byte).
fn header_end(bytes: &[u8]) -> Option<usize> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(true) => usize::try_from(reader.position().byte()).ok(),
        _ => None,
    }
}

/// What a streaming read has gathered so far.
struct StreamedPolls {
    cols: [usize; 3],
    latest_allowed: i64,
    retention: Option<Retention>,
    /// The newest valid poll seen so far (or known to the database).
    newest: Option<i64>,
    summary: FileSummary,
    /// Store keys already global.
    polls: Vec<Poll>,
    skipped_as_old: u64,
}

impl StreamedPolls {
    /// Polls before this are outside the retention window. It only moves forward as newer polls are
    /// seen, so a poll dropped early would also be dropped at the end.
    fn cutoff(&self) -> Option<i64> {
        let retention = self.retention?;
        Some(self.newest?.saturating_sub(retention.window))
    }

    /// What a chunk's parser needs to drop old polls itself: the window and the newest poll so far.
    fn retention_state(&self) -> (Option<i64>, Option<i64>) {
        (self.retention.map(|r| r.window), self.newest)
    }

    fn parse_in_parallel(&mut self, stores: &mut StoreIds, data: &[u8], first_line: u64) {
        let pieces = split_at_lines(data);
        // Each piece's first line number is known only after counting the lines before it; counting is
        // cheap next to parsing, so do it up front.
        let mut starts = Vec::with_capacity(pieces.len());
        let mut line = first_line;
        for piece in &pieces {
            starts.push(line);
            line += memchr::memchr_iter(b'\n', piece).count() as u64;
        }
        let (cols, latest_allowed, retention) = (self.cols, self.latest_allowed, self.retention_state());
        let known = &*stores;
        let parsed: Vec<ChunkResult> = std::thread::scope(|scope| {
            let handles: Vec<_> = pieces
                .iter()
                .zip(&starts)
                .map(|(piece, &start)| {
                    scope.spawn(move || {
                        parse_chunk(
                            WholePiece::new(piece),
                            known,
                            piece.len() / 56,
                            start,
                            cols,
                            latest_allowed,
                            retention,
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
        });
        for chunk in parsed {
            self.absorb(stores, chunk);
        }
    }

    /// Folds in the next chunk of the file, in file order (samples and first-seen store order follow it).
    fn absorb(&mut self, stores: &mut StoreIds, chunk: ChunkResult) {
        let global: Vec<u32> = chunk.local_ids.iter().map(|id| stores.intern(id)).collect();
        let key = |store: u32| if store & NEW_STORE == 0 { store } else { global[(store & !NEW_STORE) as usize] };
        self.newest = self.newest.max(chunk.newest);
        let cutoff = self.cutoff().unwrap_or(i64::MIN);
        let before = self.polls.len() + chunk.polls.len();
        self.polls.extend(chunk.polls.iter().filter(|p| p.at >= cutoff).map(|p| Poll { store: key(p.store), ..*p }));
        self.skipped_as_old += chunk.skipped_as_old + (before - self.polls.len()) as u64;
        self.summary.absorb(chunk.summary);
    }

    fn finish(mut self, stores: &StoreIds) -> PollsFile {
        if let Some(cutoff) = self.cutoff() {
            let before = self.polls.len();
            self.polls.retain(|p| p.at >= cutoff);
            self.skipped_as_old += (before - self.polls.len()) as u64;
        }
        let duplicates = sort_and_dedup(&mut self.polls, stores.len());
        self.summary.note("duplicate polls (the later row won)", duplicates);
        self.summary.note(NOTE_OLDER_THAN_RETENTION, self.skipped_as_old);
        PollsFile { polls: self.polls, summary: self.summary }
    }
}

/// Parses the header row; returns the positions of store_id, timestamp_utc, status and where data begins.
pub(crate) fn header(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, usize), InputError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    let found = reader
        .read_byte_record(&mut record)
        .map_err(|e| InputError::BadHeader { file: path.to_owned(), problem: e.to_string() })?;
    if !found {
        return Err(InputError::MissingColumn {
            file: path.to_owned(),
            column: "store_id".into(),
            header: String::new(),
        });
    }
    let columns = column_positions(path, FileKind::Polls, &record)?;
    let mut start = usize::try_from(reader.position().byte()).unwrap_or(bytes.len()).min(bytes.len());
    // The CSV reader may stop between the `\r` and the `\n` of a CRLF header; data starts after both,
    // or the data's first line would be numbered as the header's.
    if start > 0 && bytes[start - 1] == b'\r' && bytes.get(start) == Some(&b'\n') {
        start += 1;
    }
    Ok((columns, start))
}

/// Splits data (which holds no quote: see [`read_polls_from`]) into one piece per core at line ends.
fn split_at_lines(data: &[u8]) -> Vec<&[u8]> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 1 || data.len() < PARALLEL_FROM_BYTES {
        return vec![data];
    }
    let mut chunks = Vec::with_capacity(threads);
    let mut rest = data;
    for i in (1..threads).rev() {
        let target = rest.len() / (i + 1);
        let Some(cut) = memchr::memchr(b'\n', &rest[target..]).map(|p| target + p + 1) else { break };
        let (head, tail) = rest.split_at(cut);
        chunks.push(head);
        rest = tail;
    }
    chunks.push(rest);
    chunks
}

/// Marks a chunk's store key as an index into its new ids rather than a key of [`StoreIds`] (whose keys
/// stay below it: [`StoreIds::intern`] refuses more than 2^31 stores).
const NEW_STORE: u32 = 1 << 31;

struct ChunkResult {
    /// Store ids new to the file, in the order this chunk first saw them. `Poll::store` is a key of the
    /// stores known before the chunk, or [`NEW_STORE`] with the index of its id here.
    local_ids: Vec<Box<str>>,
    polls: Vec<Poll>,
    summary: FileSummary,
    /// The newest valid poll of the chunk.
    newest: Option<i64>,
    /// Valid polls older than the retention cutoff, not in `polls` (and their stores not interned).
    skipped_as_old: u64,
    /// The input failed while this chunk was read (only a stream can).
    io_error: Option<std::io::Error>,
}

/// What a chunk's reader knows of the bytes it gave to csv, to number a record by the line it starts on:
/// csv's position of a record is where the previous one ended, before the `\n` of a CRLF end and before
/// the empty lines it skips (see [`record_start_line`]). Line numbers are 1-based within the chunk.
trait RecordLines {
    fn start_line(&self, position: &csv::Position) -> u64;
}

/// A piece held whole in memory: every byte is at hand.
struct WholePiece<'a> {
    data: &'a [u8],
    read: usize,
}

impl<'a> WholePiece<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, read: 0 }
    }
}

impl Read for WholePiece<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = (&self.data[self.read..]).read(out)?;
        self.read += n;
        Ok(n)
    }
}

impl RecordLines for WholePiece<'_> {
    fn start_line(&self, position: &csv::Position) -> u64 {
        record_start_line(self.data, position)
    }
}

/// A stream that keeps the last bytes it gave out (csv reads ahead by its buffer, 8 KiB, so a record
/// shorter than the window still has its start in it); beyond the window a record is numbered by csv's
/// position alone, which is at most the count of the CR/LF-only lines before it early.
struct RecentBytes<R> {
    inner: R,
    /// The stream's bytes from offset `kept_from` on, up to what has been read.
    kept: Vec<u8>,
    kept_from: u64,
}

impl<R> RecentBytes<R> {
    const WINDOW: usize = 64 * 1024;

    fn new(inner: R) -> Self {
        Self { inner, kept: Vec::with_capacity(2 * Self::WINDOW), kept_from: 0 }
    }
}

impl<R: Read> Read for RecentBytes<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        if self.kept.len() + n > 2 * Self::WINDOW {
            let drop = (self.kept.len() + n).saturating_sub(Self::WINDOW).min(self.kept.len());
            self.kept.drain(..drop);
            self.kept_from += drop as u64;
        }
        self.kept.extend_from_slice(&out[..n]);
        Ok(n)
    }
}

impl<R> RecordLines for RecentBytes<R> {
    fn start_line(&self, position: &csv::Position) -> u64 {
        let Some(at) = position.byte().checked_sub(self.kept_from) else {
            return position.line();
        };
        let rest = usize::try_from(at).ok().and_then(|at| self.kept.get(at..)).unwrap_or_default();
        position.line() + line_ends_leading(rest)
    }
}

/// Parses rows starting at line `first_line`. With a retention window, a valid poll older than the window
/// before the newest poll seen (`newest` at the start, then this chunk's) is counted and dropped.
fn parse_chunk(
    chunk: impl Read + RecordLines,
    known: &StoreIds,
    expected_rows: usize,
    first_line: u64,
    cols: [usize; 3],
    latest_allowed: i64,
    (window, mut newest): (Option<i64>, Option<i64>),
) -> ChunkResult {
    let [c_store, c_time, c_status] = cols;
    let mut local: IdMap<u32> = IdMap::default();
    let mut local_ids = Vec::new();
    let mut polls = Vec::with_capacity(expected_rows);
    let mut skipped_as_old = 0u64;
    let mut io_error = None;
    let mut summary = FileSummary::default();
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(chunk);
    let mut record = csv::ByteRecord::new();
    loop {
        let before = reader.position().clone();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                // The stream failed, not the row: reading on would fail again (for ever, on a bad disk).
                if let csv::ErrorKind::Io(source) = e.into_kind() {
                    io_error = Some(source);
                }
                break;
            }
            Err(_) => {
                // csv cannot resynchronise after some errors; count the row and carry on with the next.
                summary.rows_read += 1;
                let line = first_line + reader.get_ref().start_line(&before) - 1;
                summary.reject(line, RejectReason::MalformedRow, b"");
                continue;
            }
        }
        let line = first_line + reader.get_ref().start_line(record.position().unwrap_or(&before)) - 1;
        summary.rows_read += 1;
        let (Some(store), Some(time), Some(status)) = (record.get(c_store), record.get(c_time), record.get(c_status))
        else {
            summary.reject(line, RejectReason::MalformedRow, &super::joined(&record));
            continue;
        };
        let id = match store_id(store) {
            Ok(id) => id,
            Err(reason) => {
                summary.reject(line, reason, store);
                continue;
            }
        };
        let Some(at) = parse::timestamp_utc(trim(time)) else {
            summary.reject(line, RejectReason::BadTimestamp, time);
            continue;
        };
        if at > latest_allowed {
            summary.reject(line, RejectReason::FutureTimestamp, time);
            continue;
        }
        let Some(active) = parse::status(trim(status)) else {
            summary.reject(line, RejectReason::BadStatus, status);
            continue;
        };
        if let Some(window) = window {
            let latest = newest.map_or(at, |n| n.max(at));
            newest = Some(latest);
            if at < latest.saturating_sub(window) {
                summary.accepted += 1;
                skipped_as_old += 1;
                continue;
            }
        }
        // Known stores resolve here, on this thread, against the keys of the chunks before; only a
        // store new to the file goes through the chunk's own table and is interned when it is absorbed.
        let key = match known.get(id) {
            Some(k) => k,
            None => match local.get(id) {
                Some(&k) => k,
                None => {
                    let k = NEW_STORE | local_ids.len() as u32;
                    local_ids.push(Box::from(id));
                    local.insert(Box::from(id), k);
                    k
                }
            },
        };
        summary.accepted += 1;
        polls.push(Poll { store: key, at, active });
    }
    ChunkResult { local_ids, polls, summary, newest, skipped_as_old, io_error }
}

/// Orders polls by (store, time) and keeps, of equal (store, time), the row that came last in the file.
/// Returns how many rows were dropped. Counting sort by store: keys are dense, and each store's polls
/// are few, so this beats a general sort of 1.9 M rows.
pub(crate) fn sort_and_dedup(polls: &mut Vec<Poll>, store_count: usize) -> u64 {
    let mut offsets = vec![0usize; store_count + 1];
    for p in polls.iter() {
        offsets[p.store as usize + 1] += 1;
    }
    for i in 1..offsets.len() {
        offsets[i] += offsets[i - 1];
    }
    let mut next = offsets.clone();
    let mut sorted = vec![Poll { store: 0, at: 0, active: false }; polls.len()];
    for p in polls.iter() {
        let slot = &mut next[p.store as usize];
        sorted[*slot] = *p;
        *slot += 1;
    }
    for w in offsets.windows(2) {
        // Stable: rows of equal time stay in file order, so the last of them is the later row.
        sorted[w[0]..w[1]].sort_by_key(|p| p.at);
    }
    let before = sorted.len();
    let mut kept = 0usize;
    for i in 0..sorted.len() {
        let is_last_of_its_kind = sorted.get(i + 1).is_none_or(|n| (n.store, n.at) != (sorted[i].store, sorted[i].at));
        if is_last_of_its_kind {
            sorted[kept] = sorted[i];
            kept += 1;
        }
    }
    sorted.truncate(kept);
    *polls = sorted;
    (before - kept) as u64
}

#[cfg(test)]
mod streaming_tests {
    use super::*;
    use crate::time::MICROS_PER_SECOND;

    const FAR_FUTURE: i64 = 4_000_000_000 * MICROS_PER_SECOND;

    /// Hands out one byte per read, the worst a stream can do.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let Some((&first, rest)) = self.0.split_first() else { return Ok(0) };
            match out.first_mut() {
                Some(slot) => {
                    *slot = first;
                    self.0 = rest;
                    Ok(1)
                }
                None => Ok(0),
            }
        }
    }

    fn read(text: &str, piece: usize, retention: Option<Retention>) -> (PollsFile, StoreIds) {
        let mut stores = StoreIds::new();
        let file = read_in_pieces(
            Path::new("store_status.csv"),
            Trickle(text.as_bytes()),
            &mut stores,
            FAR_FUTURE,
            retention,
            piece,
        )
        .expect("reads");
        (file, stores)
    }

    fn named(file: &PollsFile, stores: &StoreIds) -> Vec<(String, i64, bool)> {
        file.polls.iter().map(|p| (stores.id(p.store).to_owned(), p.at, p.active)).collect()
    }

    #[test]
    fn small_pieces_read_exactly_like_one_piece() {
        // LF lines: the csv crate numbers the records of CRLF lines a line early, except the first one after
        // a cut, so there line numbers depend on where the cuts fall (as they did before streaming). Only
        // the header is CRLF here (its end is handled in `header`).
        let mut text = String::from("store_id,timestamp_utc,status\r\n");
        for i in 0..200 {
            text.push_str(&format!("s{},2024-01-01 {:02}:00:00,{}\n", i % 7, i % 24, ["active", "inactive"][i % 2]));
            if i % 37 == 0 {
                text.push_str("s1,not a time,active\n");
            }
            if i % 51 == 0 {
                text.push_str(&format!("{},2024-01-02 00:00:00,active\n", "long".repeat(40)));
            }
        }
        // A quote past the first pieces: from there on one reader must take the rest.
        text.push_str("\"quoted\nid\",2024-01-03 00:00:00,active\n");
        text.push_str("s2,2024-01-01 05:00:00,active\ns3,2024-01-04 00:00:00,bogus");
        let (whole, whole_ids) = read(&text, 1 << 20, None);
        assert!(whole.summary.rejected_total() > 5, "{}", whole.summary);
        assert!(whole.summary.notes.contains_key("duplicate polls (the later row won)"), "{}", whole.summary);
        for piece in [1, 7, 64, 500] {
            let (pieces, ids) = read(&text, piece, None);
            assert_eq!(pieces.summary, whole.summary, "piece of {piece} bytes");
            assert_eq!(named(&pieces, &ids), named(&whole, &whole_ids), "piece of {piece} bytes");
        }
    }

    #[test]
    fn polls_older_than_the_window_before_the_newest_are_skipped_at_the_boundary() {
        let day = 86_400 * MICROS_PER_SECOND;
        let text = "store_id,timestamp_utc,status\n\
                    old,2024-01-01 00:00:00.999999,active\n\
                    edge,2024-01-01 00:00:01,inactive\n\
                    new,2024-01-15 00:00:01,active\n\
                    bad,2023-01-01 00:00:00,nope\n";
        for piece in [16, 1 << 20] {
            let (file, stores) = read(text, piece, Some(Retention { window: 14 * day, newest_known: None }));
            let kept: Vec<String> = named(&file, &stores).into_iter().map(|(id, ..)| id).collect();
            assert_eq!(kept, ["edge", "new"], "piece of {piece} bytes");
            assert_eq!(file.summary.notes.get(NOTE_OLDER_THAN_RETENTION), Some(&1), "{}", file.summary);
            assert_eq!((file.summary.accepted, file.summary.rejected_total()), (3, 1), "an old row is valid");
        }

        // The database's newest poll counts too: a day later, `edge` is out as well.
        let known = Some(1_705_363_201 * MICROS_PER_SECOND);
        let (file, _) = read(text, 16, Some(Retention { window: 14 * day, newest_known: known }));
        assert_eq!(file.polls.len(), 1);
        assert_eq!(file.summary.notes.get(NOTE_OLDER_THAN_RETENTION), Some(&2));
    }

    /// A disk that fails after a few good bytes.
    struct Failing<'a>(&'a [u8]);

    impl Read for Failing<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("bad sector"));
            }
            let n = self.0.len().min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_stream_that_fails_fails_the_read_instead_of_counting_bad_rows() {
        let rows = "b,2024-01-01 00:00:00,active\n".repeat(10);
        // Without a quote the failure meets a refill; after one, the single CSV reader.
        for text in [
            format!("store_id,timestamp_utc,status\n{rows}"),
            format!("store_id,timestamp_utc,status\n\"a\",2024-01-01 00:00:00,active\n{rows}"),
        ] {
            let failing = Failing(text.as_bytes());
            let err = read_in_pieces(Path::new("s.csv"), failing, &mut StoreIds::new(), FAR_FUTURE, None, 64)
                .expect_err("the read fails");
            assert!(matches!(err, InputError::Unreadable { .. }), "{err}");
            assert!(err.to_string().contains("bad sector"), "{err}");
        }
    }

    #[test]
    fn a_header_alone_or_nothing_at_all() {
        let (file, _) = read("store_id,timestamp_utc,status", 4, None);
        assert_eq!((file.polls.len(), file.summary.rows_read), (0, 0));
        let err = read_polls_bytes(Path::new("s.csv"), b"", &mut StoreIds::new(), 0).expect_err("no header");
        assert!(matches!(err, InputError::MissingColumn { .. }), "{err}");
    }

    #[test]
    fn a_fifo_is_refused_without_opening_it() {
        let dir = std::env::temp_dir().join(format!("uptime-core-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let fifo = dir.join("store_status.csv");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
        assert!(made.success());
        // Opening it for reading would block this test for ever; it must fail at once instead.
        let err = read_polls(&fifo, &mut StoreIds::new(), 0).expect_err("a FIFO is no data file");
        assert!(err.to_string().contains("not a regular file but a FIFO"), "{err}");
        let err = read_polls(&dir, &mut StoreIds::new(), 0).expect_err("a directory is no data file");
        assert!(err.to_string().contains("a directory"), "{err}");
        assert_eq!(
            super::super::DataFiles::find(&dir).expect("found by name").polls,
            fifo,
            "picked by name, refused on read"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
