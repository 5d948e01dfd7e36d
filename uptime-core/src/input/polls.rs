//! The polls file: the big one (1.9 M rows in the real data), so it is parsed in parallel chunks.

use std::collections::HashMap;
use std::path::Path;

use super::{
    FUTURE_TOLERANCE_MICROS, FileKind, FileSummary, InputError, Poll, PollsFile, RejectReason, StoreIds,
    column_positions, display_name, parse, read_file, store_id, trim,
};

/// Below this size one thread reads faster than two can start.
const PARALLEL_FROM_BYTES: usize = 4 << 20;

/// Reads a polls file. `loaded_at` (µs since the epoch) is the moment of loading: polls more than an hour
/// after it are rejected. New store ids are added to `stores`.
pub fn read_polls(path: &Path, stores: &mut StoreIds, loaded_at: i64) -> Result<PollsFile, InputError> {
    let bytes = read_file(path)?;
    read_polls_bytes(path, &bytes, stores, loaded_at)
}

/// [`read_polls`] on bytes already in memory; `path` only names the file in messages.
pub fn read_polls_bytes(
    path: &Path,
    bytes: &[u8],
    stores: &mut StoreIds,
    loaded_at: i64,
) -> Result<PollsFile, InputError> {
    let (columns, data_start) = header(path, bytes)?;
    let data = &bytes[data_start..];
    let first_line = 2 + memchr::memchr_iter(b'\n', &bytes[..data_start]).count() as u64 - 1;
    let chunks = split_at_lines(data);
    let cols = [columns[0], columns[1], columns[2]];
    let latest_allowed = loaded_at.saturating_add(FUTURE_TOLERANCE_MICROS);

    // Each chunk's first line number is known only after counting the lines before it; counting is
    // cheap next to parsing, so do it up front.
    let mut starts = Vec::with_capacity(chunks.len());
    let mut line = first_line;
    for chunk in &chunks {
        starts.push(line);
        line += memchr::memchr_iter(b'\n', chunk).count() as u64;
    }
    let parsed: Vec<ChunkResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .zip(&starts)
            .map(|(chunk, &start)| scope.spawn(move || parse_chunk(chunk, start, cols, latest_allowed)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });

    let mut summary = FileSummary { file: display_name(path), ..FileSummary::default() };
    let mut polls = Vec::with_capacity(parsed.iter().map(|c| c.polls.len()).sum());
    for chunk in parsed {
        let global: Vec<u32> = chunk.local_ids.iter().map(|id| stores.intern(id)).collect();
        polls.extend(chunk.polls.iter().map(|p| Poll { store: global[p.store as usize], ..*p }));
        summary.absorb(chunk.summary);
    }
    let duplicates = sort_and_dedup(&mut polls, stores.len());
    summary.note("duplicate polls (the later row won)", duplicates);
    Ok(PollsFile { polls, summary })
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
    let start = usize::try_from(reader.position().byte()).unwrap_or(bytes.len()).min(bytes.len());
    Ok((columns, start))
}

/// Splits data into one chunk per core at line ends. A quote character could hide a line end inside a
/// field, so a file with quotes is read in one piece.
fn split_at_lines(data: &[u8]) -> Vec<&[u8]> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 1 || data.len() < PARALLEL_FROM_BYTES || memchr::memchr(b'"', data).is_some() {
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

struct ChunkResult {
    /// Store ids in the order this chunk first saw them; `Poll::store` indexes this.
    local_ids: Vec<Box<str>>,
    polls: Vec<Poll>,
    summary: FileSummary,
}

fn parse_chunk(chunk: &[u8], first_line: u64, cols: [usize; 3], latest_allowed: i64) -> ChunkResult {
    let [c_store, c_time, c_status] = cols;
    let mut local: HashMap<Box<str>, u32> = HashMap::new();
    let mut local_ids = Vec::new();
    let mut polls = Vec::with_capacity(chunk.len() / 56);
    let mut summary = FileSummary::default();
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(chunk);
    let mut record = csv::ByteRecord::new();
    loop {
        let line = first_line + reader.position().line() - 1;
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(_) => {
                // csv cannot resynchronise after some errors; count the row and carry on with the next.
                summary.rows_read += 1;
                summary.reject(line, RejectReason::MalformedRow, b"");
                continue;
            }
        }
        let line = first_line + record.position().map_or(1, |p| p.line()) - 1;
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
        let key = match local.get(id) {
            Some(&k) => k,
            None => {
                let k = local_ids.len() as u32;
                local_ids.push(Box::from(id));
                local.insert(Box::from(id), k);
                k
            }
        };
        summary.accepted += 1;
        polls.push(Poll { store: key, at, active });
    }
    ChunkResult { local_ids, polls, summary }
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
