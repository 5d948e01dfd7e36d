//! The readers never fall over (issue 11, item 7): arbitrary bytes, and real-shaped files bent every way
//! SPEC §1 allows (column order, quotes, BOM, CRLF, empty lines, huge fields) and then broken at random.
//! Whatever comes in, a reader answers within a deadline, without panicking, and accounts for every row.
//!
//! The default case count keeps `cargo test` quick; `PROPTEST_CASES=20000 cargo test -p uptime-core
//! --release robustness` runs longer.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// 2025-01-01 00:00:00 UTC: the moment of loading, for the future-poll rule.
const LOADED_AT: i64 = 1_735_689_600 * crate::time::MICROS_PER_SECOND;
/// Far beyond what any case needs (a few milliseconds) even on a busy CI machine; past it, a reader hangs.
const DEADLINE: Duration = Duration::from_secs(20);
const CASES_BY_DEFAULT: u32 = 40;

fn config() -> ProptestConfig {
    // ProptestConfig::default() reads PROPTEST_CASES; without it, stay at a count CI runs in seconds.
    if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig::default()
    } else {
        ProptestConfig::with_cases(CASES_BY_DEFAULT)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Polls,
    Hours,
    Zones,
}

fn any_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Polls), Just(Kind::Hours), Just(Kind::Zones)]
}

/// What a reader made of a file, reduced to what the properties look at.
#[derive(Debug)]
struct Outcome {
    summary: FileSummary,
    /// Accepted rows as the reader's output accounts for them (polls kept plus duplicates dropped, …).
    accepted_in_output: u64,
    ids: Vec<String>,
}

fn read(kind: Kind, bytes: &[u8]) -> Result<Outcome, InputError> {
    let mut stores = StoreIds::new();
    let (summary, accepted_in_output) = match kind {
        Kind::Polls => {
            let file = read_polls_bytes(Path::new("store_status.csv"), bytes, &mut stores, LOADED_AT)?;
            let duplicates = file.summary.notes.get("duplicate polls (the later row won)").copied().unwrap_or(0);
            let kept = file.polls.len() as u64;
            assert!(file.polls.iter().all(|p| (p.store as usize) < stores.len()), "a poll of an unknown store");
            (file.summary, kept + duplicates)
        }
        Kind::Hours => {
            let file = read_hours_bytes(Path::new("menu_hours.csv"), bytes, &mut stores)?;
            let kept = file.rows.len() as u64;
            (file.summary, kept)
        }
        Kind::Zones => {
            let file = read_zones_bytes(Path::new("timezones.csv"), bytes, &mut stores)?;
            let replaced = file.summary.notes.get("stores listed again (the later row won)").copied().unwrap_or(0);
            let kept = file.rows.len() as u64;
            (file.summary, kept + replaced)
        }
    };
    Ok(Outcome { summary, accepted_in_output, ids: stores.iter().map(str::to_owned).collect() })
}

/// Runs a reader on its own thread so a hang fails the case instead of stalling the whole test run.
fn read_within_deadline(kind: Kind, bytes: Vec<u8>) -> Result<Result<Outcome, InputError>, TestCaseError> {
    let (done, finished) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let outcome = read(kind, &bytes);
        let _ = done.send(());
        outcome
    });
    match finished.recv_timeout(DEADLINE) {
        // Disconnected: the reader panicked before it could say so; join tells which way it ended.
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => reader
            .join()
            .map_err(|panic| TestCaseError::fail(format!("{kind:?} reader panicked: {}", panic_text(&*panic)))),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(TestCaseError::fail(format!("{kind:?} reader gave no answer within {DEADLINE:?}")))
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Record ends csv can see: `\n`, `\r`, and `\r\n` as one.
fn terminators(bytes: &[u8]) -> u64 {
    let lone_cr =
        bytes.windows(2).filter(|w| w[0] == b'\r' && w[1] != b'\n').count() + usize::from(bytes.last() == Some(&b'\r'));
    (memchr::memchr_iter(b'\n', bytes).count() + lone_cr) as u64
}

/// What must hold for any input: a clear error for the whole file, or every row accounted for.
fn check_accounting(kind: Kind, bytes: &[u8], outcome: &Result<Outcome, InputError>) -> Result<(), TestCaseError> {
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            prop_assert!(
                matches!(error, InputError::MissingColumn { .. } | InputError::BadHeader { .. }),
                "bytes in memory fail only for their header: {error}"
            );
            prop_assert!(!error.to_string().is_empty());
            return Ok(());
        }
    };
    let s = &outcome.summary;
    prop_assert_eq!(s.rows_read, s.accepted + s.rejected_total(), "{}", s);
    prop_assert_eq!(s.accepted, outcome.accepted_in_output, "{:?}: {}", kind, s);
    prop_assert!(s.rows_read <= terminators(bytes), "more rows than record ends: {}", s);
    prop_assert_eq!(s.samples.len() as u64, s.rejected_total().min(SAMPLE_LIMIT as u64), "{}", s);
    let last_line = memchr::memchr_iter(b'\n', bytes).count() as u64 + 1;
    let mut previous = 1;
    for sample in &s.samples {
        prop_assert!(
            (previous..=last_line).contains(&sample.line),
            "line {} out of order or past {}",
            sample.line,
            last_line
        );
        prop_assert!(s.rejected.get(&sample.reason).is_some_and(|&n| n > 0), "sample reason not counted");
        previous = sample.line;
    }
    for id in &outcome.ids {
        prop_assert!(!id.is_empty() && id.len() <= MAX_STORE_ID_BYTES, "id {:?} passed", id);
        prop_assert!(is_safe_store_id(id), "unsafe id {:?} was loaded", id);
        prop_assert_eq!(id.trim_ascii(), id.as_str(), "ids are trimmed");
    }
    Ok(())
}

/// Bytes that CSV gives a meaning, NUL, invalid UTF-8 and unsafe id starts, more often than chance would.
fn csvish_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => any::<u8>(),
        1 => prop::sample::select(b",\"\n\r \t\0=+-@".to_vec()),
        1 => prop::sample::select(vec![0xEF, 0xBB, 0xBF, 0xFF, 0xC3, 0xE2, 0x80, 0xAE]),
        2 => prop::sample::select(b"0123456789abcdef:-.TZ".to_vec()),
    ]
}

// ---- real-shaped files, with what the reader must say about each row ----

/// A value for a cell and the reason its row must be rejected, if any.
type Cell = (Vec<u8>, Option<RejectReason>);

/// Ids as the real data writes them: 19-digit numbers and UUIDs (both at most 36 bytes).
fn real_store_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (1_000_000_000_000_000_000u64..10_000_000_000_000_000_000).prop_map(|n| n.to_string().into_bytes()),
        any::<[u8; 16]>().prop_map(|b| {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]).into_bytes()
        }),
    ]
}

fn good_store_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => real_store_id(),
        1 => "[a-z][a-z0-9=+@-]{0,20}".prop_map(String::into_bytes),
        1 => "[é中a-z]{1,21}".prop_map(String::into_bytes),
    ]
}

fn store_cell() -> impl Strategy<Value = Cell> {
    let unsafe_char = prop::sample::select(vec![
        '\u{0}', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}', '\n',
    ]);
    prop_oneof![
        6 => good_store_id().prop_map(|id| (id, None)),
        1 => prop::sample::select(vec!["", " ", "\t"]).prop_map(|s| (s.as_bytes().to_vec(), Some(RejectReason::EmptyStoreId))),
        1 => (65usize..90).prop_map(|n| (format!("={}", "9".repeat(n)).into_bytes(), Some(RejectReason::StoreIdTooLong))),
        1 => Just((b"ab\xFFcd".to_vec(), Some(RejectReason::MalformedRow))),
        1 => (prop::sample::select(vec!["=", "+", "-", "@", "\t=", " @"]), real_store_id()).prop_map(|(start, id)| {
            ([start.as_bytes(), &id].concat(), Some(RejectReason::UnsafeStoreId))
        }),
        1 => (real_store_id(), unsafe_char).prop_map(|(id, c)| {
            let mut id = String::from_utf8_lossy(&id).into_owned();
            id.insert(0, 'x');
            id.push(c);
            id.push('y');
            (id.into_bytes(), Some(RejectReason::UnsafeStoreId))
        }),
    ]
}

fn pick(good: &[&'static str], bad: &[&'static str], reason: RejectReason) -> impl Strategy<Value = Cell> {
    let good: Vec<Vec<u8>> = good.iter().map(|s| s.as_bytes().to_vec()).collect();
    let bad: Vec<Vec<u8>> = bad.iter().map(|s| s.as_bytes().to_vec()).collect();
    prop_oneof![
        5 => prop::sample::select(good).prop_map(|v| (v, None)),
        1 => prop::sample::select(bad).prop_map(move |v| (v, Some(reason))),
    ]
}

/// One data row: the required cells in the order of `FileKind::required_columns`, and the first reason
/// in the order the reader checks them; when the flag is set the row is written as the single field `x`,
/// which lacks a required column (`malformed_row`).
fn row(kind: Kind) -> BoxedStrategy<(Vec<Cell>, bool)> {
    let cells = match kind {
        Kind::Polls => (
            store_cell(),
            prop_oneof![
                5 => prop::sample::select(vec![
                    "2023-01-22 12:09:39.388884 UTC", "2024-10-12 09:50:02.20 UTC", "2024-01-01T00:00:00Z",
                    "2024-12-31T23:30:00-01:00", "2024-01-01 00:00:00",
                ]).prop_map(|v| (v.as_bytes().to_vec(), None)),
                1 => prop::sample::select(vec!["2024-13-01 00:00:00", "yesterday", "", "0999-01-01 00:00:00"])
                    .prop_map(|v| (v.as_bytes().to_vec(), Some(RejectReason::BadTimestamp))),
                1 => Just((b"2025-01-01 01:00:01 UTC".to_vec(), Some(RejectReason::FutureTimestamp))),
            ],
            pick(&["active", "INACTIVE", "Active", "inactive"], &["open", "", "1"], RejectReason::BadStatus),
        )
            .prop_map(|(a, b, c)| vec![a, b, c])
            .boxed(),
        Kind::Hours => (
            store_cell(),
            pick(&["0", "3", "6"], &["7", "-1", "mon", ""], RejectReason::BadDayOfWeek),
            pick(&["00:00:00", "09:30", "23:59:59.5"], &["24:00", "25:00", "9am"], RejectReason::BadStartTime),
            pick(&["23:59:00", "17:00", "24:00:00"], &["24:01", "x", ""], RejectReason::BadEndTime),
        )
            .prop_map(|(a, b, c, d)| vec![a, b, c, d])
            .boxed(),
        Kind::Zones => (
            store_cell(),
            prop::sample::select(vec!["America/Chicago", "Asia/Beirut", "Mars/Base", ""])
                .prop_map(|v| (v.as_bytes().to_vec(), None)),
        )
            .prop_map(|(a, b)| vec![a, b])
            .boxed(),
    };
    (cells, prop::bool::weighted(0.05)).boxed()
}

/// How one cell is written: padding and quoting that SPEC §1 says change nothing.
#[derive(Debug, Clone)]
struct Style {
    quote: bool,
    pad_left: &'static str,
    pad_right: &'static str,
}

fn style() -> impl Strategy<Value = Style> {
    (any::<bool>(), prop::sample::select(vec!["", "", " ", "\t", " \r\n"]), prop::sample::select(vec!["", "", "  "]))
        .prop_map(|(quote, pad_left, pad_right)| Style { quote, pad_left, pad_right })
}

fn write_cell(out: &mut Vec<u8>, value: &[u8], style: &Style) {
    let text = [style.pad_left.as_bytes(), value, style.pad_right.as_bytes()].concat();
    let quoted = style.quote || text.iter().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if quoted {
        out.push(b'"');
        for &b in &text {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(&text);
    }
}

fn extra_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        30 => "[a-z ,\"\n]{0,12}".prop_map(String::into_bytes),
        4 => prop::collection::vec(any::<u8>(), 0..16),
        1 => (1usize..200_000).prop_map(|n| vec![b'y'; n]),
    ]
}

/// A generated file and what the reader must report for it.
#[derive(Debug, Clone)]
struct Expected {
    rows_read: u64,
    accepted: u64,
    /// (line, reason) of every rejected row, in file order.
    rejected: Vec<(u64, RejectReason)>,
    /// Only LF line ends and no empty lines: the polls reader numbers other files' lines early (see
    /// `tests::polls_number_lines_after_crlf_ends_and_empty_lines`), the hours and zones readers do not.
    plain_lf: bool,
}

/// Writes a real-shaped file of `kind`: a shuffled header with extra columns, optional BOM, rows with LF or
/// CRLF ends, empty lines, quoted and padded cells; returns the bytes and what the reader must report.
fn real_shaped_file(kind: Kind) -> impl Strategy<Value = (Vec<u8>, Expected)> {
    let rows = prop::collection::vec(
        (
            row(kind),
            prop::collection::vec(style(), 8),
            prop::collection::vec(extra_value(), 3),
            0usize..3,
            any::<bool>(),
        ),
        0..60,
    );
    (0usize..3, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<u64>(), rows).prop_map(
        move |(extras, bom, day_spelled_short, header_crlf, last_line_ended, seed, rows)| {
            let mut names: Vec<String> = FileKind::from(kind)
                .required_columns()
                .iter()
                .map(|s| if s.len() > 1 && day_spelled_short { s[1].to_string() } else { s[0].to_string() })
                .collect();
            let required = names.len();
            names.extend((0..extras).map(|i| format!("extra{i}")));
            // Column i of the file holds logical column order[i]: required ones first, then extras.
            let mut order: Vec<usize> = (0..names.len()).collect();
            shuffle(&mut order, seed);
            let mut out = Vec::new();
            if bom {
                out.extend_from_slice(b"\xEF\xBB\xBF");
            }
            let header: Vec<String> = order.iter().map(|&i| format!(" {} ", names[i])).collect();
            out.extend_from_slice(header.join(",").as_bytes());
            out.extend_from_slice(if header_crlf { b"\r\n" } else { b"\n" });
            let mut expected = Expected { rows_read: 0, accepted: 0, rejected: Vec::new(), plain_lf: !header_crlf };
            let count = rows.len();
            for (n, ((cells, malformed), styles, extra_values, empty_lines_before, crlf)) in
                rows.into_iter().enumerate()
            {
                expected.plain_lf &= !crlf && empty_lines_before == 0;
                for _ in 0..empty_lines_before {
                    out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                }
                let line = memchr::memchr_iter(b'\n', &out).count() as u64 + 1;
                expected.rows_read += 1;
                let reason = if malformed { Some(RejectReason::MalformedRow) } else { cells.iter().find_map(|c| c.1) };
                match reason {
                    Some(reason) => expected.rejected.push((line, reason)),
                    None => expected.accepted += 1,
                }
                if malformed {
                    out.push(b'x');
                } else {
                    for (position, &logical) in order.iter().enumerate() {
                        if position > 0 {
                            out.push(b',');
                        }
                        let value =
                            if logical < required { &cells[logical].0 } else { &extra_values[logical - required] };
                        write_cell(&mut out, value, &styles[position]);
                    }
                }
                if n + 1 < count || last_line_ended {
                    out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                }
            }
            (out, expected)
        },
    )
}

impl From<Kind> for FileKind {
    fn from(kind: Kind) -> FileKind {
        match kind {
            Kind::Polls => FileKind::Polls,
            Kind::Hours => FileKind::Hours,
            Kind::Zones => FileKind::Zones,
        }
    }
}

/// Fisher–Yates from a seed, so the column order shrinks with the case.
fn shuffle(order: &mut [usize], mut seed: u64) {
    for i in (1..order.len()).rev() {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        order.swap(i, (seed >> 33) as usize % (i + 1));
    }
}

/// A random edit of a file: what a truncated upload, a bad editor or a hostile client could do.
#[derive(Debug, Clone)]
enum Mutation {
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Duplicate(Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), prop::collection::vec(csvish_byte(), 1..6)).prop_map(|(at, b)| Mutation::Insert(at, b)),
        2 => (any::<Index>(), 1usize..40).prop_map(|(at, n)| Mutation::Delete(at, n)),
        1 => (any::<Index>(), 1usize..80).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len + 1) };
    match mutation {
        Mutation::Insert(i, b) => {
            let p = at(i, bytes.len());
            bytes.splice(p..p, b.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let p = at(i, bytes.len());
            let end = (p + n).min(bytes.len());
            bytes.drain(p..end);
        }
        Mutation::Duplicate(i, n) => {
            let p = at(i, bytes.len());
            let end = (p + n).min(bytes.len());
            let copy = bytes[p..end].to_vec();
            bytes.splice(p..p, copy);
        }
        Mutation::Truncate(i) => {
            let p = at(i, bytes.len());
            bytes.truncate(p);
        }
    }
}

fn valid_header(kind: Kind) -> &'static [u8] {
    match kind {
        Kind::Polls => b"store_id,status,timestamp_utc\n",
        Kind::Hours => b"store_id,dayOfWeek,start_time_local,end_time_local\n",
        Kind::Zones => b"store_id,timezone_str\n",
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_break_a_reader(kind in any_kind(), bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let outcome = read_within_deadline(kind, bytes.clone())?;
        check_accounting(kind, &bytes, &outcome)?;
    }

    #[test]
    fn csvish_bytes_under_a_valid_header_are_all_accounted_for(
        kind in any_kind(),
        body in prop::collection::vec(csvish_byte(), 0..4096),
    ) {
        let bytes = [valid_header(kind), &body].concat();
        let outcome = read_within_deadline(kind, bytes.clone())?;
        prop_assert!(outcome.is_ok(), "a valid header reads");
        check_accounting(kind, &bytes, &outcome)?;
    }

    #[test]
    fn real_shaped_files_give_each_row_its_reason_and_line(
        (kind, (bytes, expected)) in any_kind().prop_flat_map(|kind| (Just(kind), real_shaped_file(kind))),
    ) {
        let outcome = read_within_deadline(kind, bytes.clone())?;
        check_accounting(kind, &bytes, &outcome)?;
        let Ok(outcome) = outcome else { return Err(TestCaseError::fail("a real-shaped file reads")) };
        let s = &outcome.summary;
        prop_assert_eq!((s.rows_read, s.accepted), (expected.rows_read, expected.accepted), "{}", s);
        let mut samples: Vec<(u64, RejectReason)> = s.samples.iter().map(|r| (r.line, r.reason)).collect();
        let mut first: Vec<(u64, RejectReason)> = expected.rejected.iter().copied().take(SAMPLE_LIMIT).collect();
        if kind == Kind::Polls && !expected.plain_lf {
            samples.iter_mut().chain(first.iter_mut()).for_each(|(line, _)| *line = 0);
        }
        prop_assert_eq!(samples, first);
        let mut by_reason = std::collections::BTreeMap::new();
        for (_, reason) in &expected.rejected {
            *by_reason.entry(*reason).or_insert(0u64) += 1;
        }
        prop_assert_eq!(&s.rejected, &by_reason);
    }

    #[test]
    fn real_shaped_files_broken_at_random_never_break_a_reader(
        (kind, (bytes, _)) in any_kind().prop_flat_map(|kind| (Just(kind), real_shaped_file(kind))),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let mut bytes = bytes;
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let outcome = read_within_deadline(kind, bytes.clone())?;
        check_accounting(kind, &bytes, &outcome)?;
    }
}
