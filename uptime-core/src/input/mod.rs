//! The three input files of SPEC §1: finding them in a folder, reading them, and accounting for every row.
//!
//! Pure: bytes in, validated records and a [`FileSummary`] out. The CLI feeds the records to the engine;
//! the ingest worker writes them to MySQL. Store ids are interned once ([`StoreIds`]) so every later stage
//! handles a `u32` instead of a string of up to 64 bytes.

pub mod parse;
mod polls;
mod tables;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

pub use polls::{
    NOTE_OLDER_THAN_RETENTION, Retention, STREAM_CHUNK_BYTES, read_polls, read_polls_bytes, read_polls_from,
};
pub use tables::{read_hours, read_hours_bytes, read_zones, read_zones_bytes};

/// How many rejected lines a summary keeps, per file, as examples for a person.
pub const SAMPLE_LIMIT: usize = 20;
/// The longest store id the spec allows, in bytes.
pub const MAX_STORE_ID_BYTES: usize = 64;
/// A poll stamped later than this after the moment it is loaded is rejected (SPEC §1).
pub const FUTURE_TOLERANCE_MICROS: i64 = 3_600 * crate::time::MICROS_PER_SECOND;
/// The zone of a store without a (known) zone.
pub const DEFAULT_ZONE: chrono_tz::Tz = chrono_tz::America::Chicago;

/// The zone a `timezone_str` names, `None` for a name chrono-tz does not know (the store is then in
/// [`DEFAULT_ZONE`]).
pub fn known_zone(name: &str) -> Option<chrono_tz::Tz> {
    name.parse::<chrono_tz::Tz>().ok()
}

/// Which of the three inputs a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    Polls,
    Hours,
    Zones,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Polls => "polls",
            FileKind::Hours => "hours",
            FileKind::Zones => "zones",
        }
    }

    /// The columns a file of this kind must have; each entry lists the accepted spellings.
    fn required_columns(self) -> &'static [&'static [&'static str]] {
        match self {
            FileKind::Polls => &[&["store_id"], &["timestamp_utc"], &["status"]],
            FileKind::Hours => &[&["store_id"], &["dayOfWeek", "day"], &["start_time_local"], &["end_time_local"]],
            FileKind::Zones => &[&["store_id"], &["timezone_str"]],
        }
    }
}

/// Why a row was not loaded. The string forms are stable: they are stored in load records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The row has fewer fields than the header, or is not valid UTF-8 / CSV.
    MalformedRow,
    EmptyStoreId,
    StoreIdTooLong,
    /// A spreadsheet would read the id as a formula, or show it reordered or with hidden characters:
    /// see [`is_safe_store_id`].
    UnsafeStoreId,
    BadTimestamp,
    /// More than an hour after the moment of loading.
    FutureTimestamp,
    BadStatus,
    BadDayOfWeek,
    BadStartTime,
    BadEndTime,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedRow => "malformed_row",
            RejectReason::EmptyStoreId => "empty_store_id",
            RejectReason::StoreIdTooLong => "store_id_too_long",
            RejectReason::UnsafeStoreId => "unsafe_store_id",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::BadStatus => "bad_status",
            RejectReason::BadDayOfWeek => "bad_day_of_week",
            RejectReason::BadStartTime => "bad_start_time",
            RejectReason::BadEndTime => "bad_end_time",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rejected row, kept as an example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    pub reason: RejectReason,
    /// The offending value, shortened, so a person sees what was wrong.
    pub value: String,
}

/// The account of one file: every data row is either accepted or rejected for a counted reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSummary {
    pub file: String,
    pub rows_read: u64,
    pub accepted: u64,
    pub rejected: BTreeMap<RejectReason, u64>,
    /// The first [`SAMPLE_LIMIT`] rejected rows, in file order.
    pub samples: Vec<RejectedRow>,
    /// Accepted rows worth a mention: duplicate polls (a later row won), unknown zones (treated as missing).
    pub notes: BTreeMap<String, u64>,
}

impl FileSummary {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub(crate) fn reject(&mut self, line: u64, reason: RejectReason, value: &[u8]) {
        *self.rejected.entry(reason).or_default() += 1;
        if self.samples.len() < SAMPLE_LIMIT {
            let mut value = String::from_utf8_lossy(value).into_owned();
            if value.len() > 80 {
                let mut cut = 77;
                while !value.is_char_boundary(cut) {
                    cut -= 1;
                }
                value.truncate(cut);
                value.push('…');
            }
            self.samples.push(RejectedRow { line, reason, value });
        }
    }

    /// Adds `count` to a note (nothing for zero, so a summary lists only what happened).
    pub fn note(&mut self, what: &str, count: u64) {
        if count > 0 {
            *self.notes.entry(what.to_owned()).or_default() += count;
        }
    }

    /// Folds a later part of the same file into this one (rows are read in parallel chunks).
    pub(crate) fn absorb(&mut self, later: FileSummary) {
        self.rows_read += later.rows_read;
        self.accepted += later.accepted;
        for (reason, n) in later.rejected {
            *self.rejected.entry(reason).or_default() += n;
        }
        let room = SAMPLE_LIMIT.saturating_sub(self.samples.len());
        self.samples.extend(later.samples.into_iter().take(room));
        for (what, n) in later.notes {
            *self.notes.entry(what).or_default() += n;
        }
    }
}

impl fmt::Display for FileSummary {
    /// One line a person can read: `polls store_status.csv: 10 rows, 8 accepted, 2 rejected (bad_status 1, …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} rows, {} accepted, {} rejected",
            self.file,
            self.rows_read,
            self.accepted,
            self.rejected_total()
        )?;
        if !self.rejected.is_empty() {
            let parts: Vec<String> = self.rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        for (what, n) in &self.notes {
            write!(f, "; {what}: {n}")?;
        }
        Ok(())
    }
}

/// A file that cannot be loaded at all. The message names the file and the problem, for one log line.
#[derive(Debug)]
pub enum InputError {
    NoFolder(PathBuf),
    NoPollsFile(PathBuf),
    Ambiguous {
        folder: PathBuf,
        kind: FileKind,
        names: Vec<String>,
    },
    Unreadable {
        file: PathBuf,
        source: std::io::Error,
    },
    /// A FIFO, a device, a directory… named like a data file: opening it could block for ever.
    NotAFile {
        file: PathBuf,
        kind: &'static str,
    },
    /// Larger than the configured limit (the ingest's `max_file_bytes`).
    TooLarge {
        file: PathBuf,
        bytes: u64,
        limit: u64,
    },
    MissingColumn {
        file: PathBuf,
        column: String,
        header: String,
    },
    BadHeader {
        file: PathBuf,
        problem: String,
    },
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::NoFolder(folder) => write!(f, "{}: no such folder", folder.display()),
            InputError::NoPollsFile(folder) => {
                write!(f, "{}: no polls file (expected store_status.csv)", folder.display())
            }
            InputError::Ambiguous { folder, kind, names } => {
                write!(f, "{}: {} files match, keep one: {}", folder.display(), kind.as_str(), names.join(", "))
            }
            InputError::Unreadable { file, source } => write!(f, "{}: cannot read: {source}", file.display()),
            InputError::NotAFile { file, kind } => {
                write!(f, "{}: not a regular file but {kind}; not read", file.display())
            }
            InputError::TooLarge { file, bytes, limit } => write!(
                f,
                "{}: {bytes} bytes, over the limit of {limit} bytes (ingest.max_file_bytes); not read",
                file.display()
            ),
            InputError::MissingColumn { file, column, header } => {
                write!(f, "{}: missing required column {column:?} (header: {header})", file.display())
            }
            InputError::BadHeader { file, problem } => {
                write!(f, "{}: the header row is not valid CSV/UTF-8: {problem}", file.display())
            }
        }
    }
}

impl std::error::Error for InputError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InputError::Unreadable { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The input files found in a data folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFiles {
    pub polls: PathBuf,
    pub hours: Option<PathBuf>,
    pub zones: Option<PathBuf>,
}

impl DataFiles {
    /// Finds the files by the names SPEC §1 accepts. Polls: `store_status.csv`, or a single
    /// `store_status*.csv` (samples of the real data are named so). Hours: `business_hours.csv` or
    /// `menu_hours.csv`. Zones: `timezones.csv`, `store_timezones.csv`, or a `bq-results*.csv`.
    pub fn find(folder: &Path) -> Result<DataFiles, InputError> {
        let entries = std::fs::read_dir(folder).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => InputError::NoFolder(folder.to_owned()),
            _ => InputError::Unreadable { file: folder.to_owned(), source: e },
        })?;
        // Every entry counts, whatever its type: a FIFO or a folder named like a data file is picked and
        // then refused by `open_regular`, so it fails its load instead of passing for a missing file.
        let mut names: Vec<String> =
            entries.filter_map(Result::ok).filter_map(|e| e.file_name().into_string().ok()).collect();
        names.sort();
        let pick = |kind: FileKind, exact: &[&str], prefix: &str| -> Result<Option<PathBuf>, InputError> {
            if let Some(name) = exact.iter().find(|n| names.iter().any(|m| m == *n)) {
                return Ok(Some(folder.join(name)));
            }
            let loose: Vec<&String> = names.iter().filter(|n| n.starts_with(prefix) && n.ends_with(".csv")).collect();
            match loose.as_slice() {
                [] => Ok(None),
                [one] => Ok(Some(folder.join(one))),
                many => Err(InputError::Ambiguous {
                    folder: folder.to_owned(),
                    kind,
                    names: many.iter().map(|s| s.to_string()).collect(),
                }),
            }
        };
        let polls = pick(FileKind::Polls, &["store_status.csv"], "store_status")?
            .ok_or_else(|| InputError::NoPollsFile(folder.to_owned()))?;
        let hours = pick(FileKind::Hours, &["business_hours.csv", "menu_hours.csv"], "\u{0}")?;
        let zones = pick(FileKind::Zones, &["timezones.csv", "store_timezones.csv"], "bq-results")?;
        Ok(DataFiles { polls, hours, zones })
    }
}

/// Interns store ids: each distinct id gets a dense `u32` key, in first-seen order.
#[derive(Debug, Default, Clone)]
pub struct StoreIds {
    ids: Vec<Box<str>>,
    /// Ids of up to [`MAX_STORE_ID_BYTES`] (all the readers accept) held in the table itself: a lookup
    /// in a table larger than the cache then costs one miss, not a second one for a boxed string (it
    /// halved the time to read 19 M polls of 140 k stores).
    index: HashMap<InlineId, u32, std::hash::BuildHasherDefault<IdHasher>>,
    /// Longer ids, which only a caller other than the readers can bring.
    long: IdMap<u32>,
}

/// A store id of up to [`MAX_STORE_ID_BYTES`], zero-padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InlineId {
    len: u8,
    bytes: [u8; MAX_STORE_ID_BYTES],
}

impl InlineId {
    fn new(id: &str) -> Option<InlineId> {
        let len = u8::try_from(id.len()).ok().filter(|&len| usize::from(len) <= MAX_STORE_ID_BYTES)?;
        let mut bytes = [0; MAX_STORE_ID_BYTES];
        bytes[..id.len()].copy_from_slice(id.as_bytes());
        Some(InlineId { len, bytes })
    }
}

impl std::hash::Hash for InlineId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.bytes[..usize::from(self.len)]);
    }
}

/// A map keyed by store id with a fast hash. A polls file of 19 M rows looks an id up for every row, and
/// SipHash (std's default, built against hash flooding by network peers) was a quarter of the reading
/// time; store ids come from the operator's own data files.
pub(crate) type IdMap<V> = HashMap<Box<str>, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The FxHash of rustc: one multiply and rotate per 8 bytes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word =
                u64::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7]]);
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(SEED);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl StoreIds {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn intern(&mut self, id: &str) -> u32 {
        if let Some(key) = self.get(id) {
            return key;
        }
        let key = u32::try_from(self.ids.len()).ok().filter(|&k| k < 1 << 31).expect("fewer than 2^31 stores");
        self.ids.push(id.into());
        match InlineId::new(id) {
            Some(inline) => self.index.insert(inline, key),
            None => self.long.insert(id.into(), key),
        };
        key
    }

    pub fn get(&self, id: &str) -> Option<u32> {
        match InlineId::new(id) {
            Some(inline) => self.index.get(&inline).copied(),
            None => self.long.get(id).copied(),
        }
    }

    pub fn id(&self, key: u32) -> &str {
        &self.ids[key as usize]
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.ids.iter().map(|s| &**s)
    }
}

/// One accepted poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    pub store: u32,
    /// Microseconds since the Unix epoch, UTC.
    pub at: i64,
    pub active: bool,
}

/// One accepted business-hours row. Times are microseconds since local midnight; `end` may be 24:00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoursRow {
    pub store: u32,
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u8,
    pub start: i64,
    pub end: i64,
}

/// One store's zone as written; `zone` is `None` when chrono-tz does not know the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneRow {
    pub store: u32,
    pub name: String,
    pub zone: Option<chrono_tz::Tz>,
}

/// The polls of a file: sorted by (store, time), one per (store, time) — the later row of the file won.
#[derive(Debug, Clone, Default)]
pub struct PollsFile {
    pub polls: Vec<Poll>,
    pub summary: FileSummary,
}

#[derive(Debug, Clone, Default)]
pub struct HoursFile {
    pub rows: Vec<HoursRow>,
    /// Stores that had hour rows, all rejected: they count as having no business hours (SPEC §1).
    pub stores_with_only_rejected_rows: Vec<u32>,
    pub summary: FileSummary,
}

/// Zones, one per store (a later row for the same store replaces an earlier one).
#[derive(Debug, Clone, Default)]
pub struct ZonesFile {
    pub rows: Vec<ZoneRow>,
    pub summary: FileSummary,
}

/// The three files of a data folder, read: what the offline report and the benchmarks compute from.
#[derive(Debug, Default)]
pub struct FolderData {
    pub stores: StoreIds,
    pub polls: Vec<Poll>,
    pub hours: Vec<HoursRow>,
    /// Known zones only; a store not in the map is in America/Chicago.
    pub zones: HashMap<u32, chrono_tz::Tz>,
    /// One per file read, polls first.
    pub summaries: Vec<FileSummary>,
    /// A sentence per missing optional file.
    pub warnings: Vec<String>,
}

/// Finds and reads the three files of `folder`. `loaded_at` is the moment of loading (for the
/// future-poll rule). A missing hours or zones file is a warning, not an error (SPEC §1).
pub fn read_folder(folder: &Path, loaded_at: i64) -> Result<FolderData, InputError> {
    let files = DataFiles::find(folder)?;
    let mut stores = StoreIds::new();
    let polls = read_polls(&files.polls, &mut stores, loaded_at)?;
    let mut summaries = vec![polls.summary];
    let mut warnings = Vec::new();
    let hours = match &files.hours {
        Some(path) => {
            let file = read_hours(path, &mut stores)?;
            summaries.push(file.summary);
            file.rows
        }
        None => {
            warnings.push(format!("{}: no business hours file: every store is open all the time", folder.display()));
            Vec::new()
        }
    };
    let zones = match &files.zones {
        Some(path) => {
            let file = read_zones(path, &mut stores)?;
            summaries.push(file.summary);
            file.rows.into_iter().filter_map(|r| r.zone.map(|tz| (r.store, tz))).collect()
        }
        None => {
            warnings.push(format!("{}: no time zone file: every store is in America/Chicago", folder.display()));
            HashMap::new()
        }
    };
    Ok(FolderData { stores, polls: polls.polls, hours, zones, summaries, warnings })
}

/// Locates the required columns in a header row (names trimmed, BOM removed, any order).
pub(crate) fn column_positions(
    file: &Path,
    kind: FileKind,
    header: &csv::ByteRecord,
) -> Result<Vec<usize>, InputError> {
    let names: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let raw = if i == 0 { raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw) } else { raw };
            String::from_utf8_lossy(raw).trim().to_owned()
        })
        .collect();
    kind.required_columns()
        .iter()
        .map(|spellings| {
            spellings.iter().find_map(|want| names.iter().position(|n| n == want)).ok_or_else(|| {
                InputError::MissingColumn {
                    file: file.to_owned(),
                    column: spellings[0].to_owned(),
                    header: names.join(","),
                }
            })
        })
        .collect()
}

/// Trims ASCII white space from both ends of a field.
pub(crate) fn trim(field: &[u8]) -> &[u8] {
    field.trim_ascii()
}

/// Checks a store id: non-empty after trimming, at most 64 bytes, UTF-8, and safe in a report cell
/// ([`is_safe_store_id`]). Every reader checks ids here, so one rule holds for polls, hours and zones.
pub(crate) fn store_id(field: &[u8]) -> Result<&str, RejectReason> {
    let id = trim(field);
    if id.is_empty() {
        return Err(RejectReason::EmptyStoreId);
    }
    if id.len() > MAX_STORE_ID_BYTES {
        return Err(RejectReason::StoreIdTooLong);
    }
    let id = std::str::from_utf8(id).map_err(|_| RejectReason::MalformedRow)?;
    if !is_safe_store_id(id) {
        return Err(RejectReason::UnsafeStoreId);
    }
    Ok(id)
}

/// First characters that make a spreadsheet read a cell as a formula (SPEC §1). Tab and carriage return
/// are on the list because some spreadsheets drop them and then evaluate what follows.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Whether a store id may be written into a report cell as it is (SPEC §1): it does not begin like a
/// formula, and has no control character (Unicode category Cc) and no bidirectional embedding, override
/// or isolate character (U+202A–U+202E, U+2066–U+2069), which would show the cell reordered.
pub fn is_safe_store_id(id: &str) -> bool {
    let begins_like_formula = id.starts_with(FORMULA_STARTS);
    let hides_or_reorders =
        id.chars().any(|c| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'));
    !begins_like_formula && !hides_or_reorders
}

/// The line a record starts on, from the position csv gives for it. csv reports where the previous
/// record ended, which is before the `\n` of a CRLF end and before the empty lines it skips as part of the
/// next record; the record itself starts after all of those. `data` is what the csv reader reads.
pub(crate) fn record_start_line(data: &[u8], position: &csv::Position) -> u64 {
    let rest = usize::try_from(position.byte()).ok().and_then(|at| data.get(at..)).unwrap_or_default();
    position.line() + line_ends_leading(rest)
}

/// How many line ends the run of CR and LF bytes that `rest` begins with holds.
pub(crate) fn line_ends_leading(rest: &[u8]) -> u64 {
    rest.iter().take_while(|b| matches!(b, b'\r' | b'\n')).filter(|&&b| b == b'\n').count() as u64
}

/// A record as its fields joined by commas, to show a malformed row as it was written.
pub(crate) fn joined(record: &csv::ByteRecord) -> Vec<u8> {
    record.iter().collect::<Vec<_>>().join(&b',')
}

/// Opens a data file after checking (through symlinks) that it is a regular file, and returns it with
/// its length. Opening a FIFO for reading blocks until a writer comes, and a device may never end: both
/// are refused before `open`.
pub fn open_regular(path: &Path) -> Result<(std::fs::File, u64), InputError> {
    let unreadable = |source| InputError::Unreadable { file: path.to_owned(), source };
    let not_a_file = |t: std::fs::FileType| InputError::NotAFile { file: path.to_owned(), kind: file_type_name(t) };
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(not_a_file(metadata.file_type()));
    }
    let file = std::fs::File::open(path).map_err(unreadable)?;
    // The entry may have been replaced between the two calls; the handle is what gets read.
    let metadata = file.metadata().map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(not_a_file(metadata.file_type()));
    }
    Ok((file, metadata.len()))
}

fn file_type_name(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "an entry of another kind"
    }
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, InputError> {
    use std::io::Read as _;
    let (mut file, len) = open_regular(path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(|source| InputError::Unreadable { file: path.to_owned(), source })?;
    Ok(bytes)
}

pub(crate) fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod tests;
