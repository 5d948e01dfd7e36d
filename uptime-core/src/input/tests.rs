//! The readers against SPEC §1: headers, quoting, every rejection reason, and the parallel path.

use std::path::Path;

use super::*;

const FAR_FUTURE: i64 = 4_000_000_000 * crate::time::MICROS_PER_SECOND;

fn polls(text: &str) -> PollsFile {
    read_polls_bytes(Path::new("store_status.csv"), text.as_bytes(), &mut StoreIds::new(), FAR_FUTURE).expect("reads")
}

#[test]
fn header_is_found_by_name_with_bom_spaces_quotes_and_extra_columns() {
    let file = polls(
        "\u{feff} status , \"extra\",store_id ,timestamp_utc\r\n active ,x,\"s,1\", 2024-01-01 00:00:00 UTC \r\n",
    );
    assert_eq!(file.summary.accepted, 1, "{}", file.summary);
    assert_eq!(file.polls[0].at, 1_704_067_200 * crate::time::MICROS_PER_SECOND);
    assert!(file.polls[0].active);
}

#[test]
fn every_polls_rejection_reason_is_counted_with_its_line() {
    let long_id = "x".repeat(MAX_STORE_ID_BYTES + 1);
    let text = format!(
        "store_id,timestamp_utc,status\n\
         ok,2024-01-01 00:00:00,active\n\
         ,2024-01-01 00:00:00,active\n\
         {long_id},2024-01-01 00:00:00,active\n\
         ok,2024-13-01 00:00:00,active\n\
         ok,2024-01-01 01:00:00,open\n\
         ok,2024-01-01 02:00:00\n\
         ok,2024-01-01 03:00:00,inactive\n"
    );
    let file = polls(&text);
    let s = &file.summary;
    assert_eq!((s.rows_read, s.accepted, s.rejected_total()), (7, 2, 5), "{s}");
    let seen: Vec<(u64, RejectReason)> = s.samples.iter().map(|r| (r.line, r.reason)).collect();
    assert_eq!(
        seen,
        vec![
            (3, RejectReason::EmptyStoreId),
            (4, RejectReason::StoreIdTooLong),
            (5, RejectReason::BadTimestamp),
            (6, RejectReason::BadStatus),
            (7, RejectReason::MalformedRow),
        ]
    );
}

#[test]
fn store_id_of_exactly_64_bytes_is_accepted_and_ids_are_compared_byte_for_byte() {
    let id = "é".repeat(32);
    let file = polls(&format!(
        "store_id,timestamp_utc,status\n{id},2024-01-01 00:00:00,active\nA,2024-01-01 00:00:00,active\na,2024-01-01 00:00:00,active\n"
    ));
    assert_eq!(file.summary.accepted, 3);
    assert_eq!(file.polls.iter().map(|p| p.store).collect::<std::collections::BTreeSet<_>>().len(), 3);
}

#[test]
fn missing_required_column_fails_the_whole_file() {
    let err = read_polls_bytes(Path::new("store_status.csv"), b"store_id,status\n", &mut StoreIds::new(), 0)
        .expect_err("no timestamp column");
    assert_eq!(
        err.to_string(),
        "store_status.csv: missing required column \"timestamp_utc\" (header: store_id,status)"
    );
    let err = read_zones_bytes(Path::new("timezones.csv"), b"", &mut StoreIds::new()).expect_err("empty file");
    assert!(err.to_string().contains("missing required column"));
}

#[test]
fn hours_accept_day_or_day_of_week_and_flag_stores_with_only_bad_rows() {
    let mut stores = StoreIds::new();
    let file = read_hours_bytes(
        Path::new("menu_hours.csv"),
        b"store_id,day,start_time_local,end_time_local\na,0,09:00,17:00\nb,9,09:00,17:00\nb,1,24:00,17:00\nc,1,10:00,25:00\n",
        &mut stores,
    )
    .expect("reads");
    assert_eq!(file.rows, vec![HoursRow { store: 0, weekday: 0, start: 9 * 3_600_000_000, end: 17 * 3_600_000_000 }]);
    assert_eq!(file.stores_with_only_rejected_rows, vec![stores.get("b").expect("b"), stores.get("c").expect("c")]);
    let reasons: Vec<RejectReason> = file.summary.samples.iter().map(|s| s.reason).collect();
    assert_eq!(reasons, vec![RejectReason::BadDayOfWeek, RejectReason::BadStartTime, RejectReason::BadEndTime]);
}

#[test]
fn unknown_zone_is_kept_as_written_and_counted_and_later_rows_win() {
    let mut stores = StoreIds::new();
    let file = read_zones_bytes(
        Path::new("timezones.csv"),
        b"store_id,timezone_str\na,Mars/Base\nb,Asia/Beirut\nb,America/Boise\n",
        &mut stores,
    )
    .expect("reads");
    assert_eq!(file.rows.len(), 2);
    assert_eq!((file.rows[0].name.as_str(), file.rows[0].zone), ("Mars/Base", None));
    assert_eq!(file.rows[1].zone, Some(chrono_tz::America::Boise));
    assert_eq!(file.summary.notes.get("unknown time zones (America/Chicago used)"), Some(&1));
}

#[test]
fn parallel_read_of_a_large_file_equals_a_single_chunk_read() {
    // Over the parallel threshold; a bad row near the end checks that line numbers survive chunking.
    let mut text = String::from("store_id,status,timestamp_utc\n");
    for i in 0..120_000u64 {
        let minute = i % 600;
        text.push_str(&format!(
            "store-{},{},2024-01-01 {:02}:{:02}:00.123456 UTC\n",
            i % 997,
            if i % 3 == 0 { "inactive" } else { "active" },
            minute / 60,
            minute % 60
        ));
    }
    text.push_str("store-1,active,not-a-time\n");
    assert!(text.len() > 4 << 20);
    let parallel = polls(&text);
    // A quote anywhere makes the reader take one chunk.
    let single = polls(&text.replacen("store_id", "\"store_id\"", 1));
    assert_eq!(parallel.polls, single.polls);
    assert_eq!(parallel.summary, single.summary);
    assert_eq!(parallel.summary.samples[0].line, 120_002);
    assert_eq!(
        parallel.summary.notes.get("duplicate polls (the later row won)").copied().unwrap_or(0),
        120_000 - parallel.polls.len() as u64
    );
}

#[test]
fn data_files_are_found_by_every_accepted_name() {
    let dir = std::env::temp_dir().join(format!("rm-find-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    assert!(matches!(DataFiles::find(&dir), Err(InputError::NoPollsFile(_))));
    for name in ["store_status_sample_10k.csv", "menu_hours.csv", "bq-results-20230125-202210-1674678181880.csv"] {
        std::fs::write(dir.join(name), "").expect("write");
    }
    let found = DataFiles::find(&dir).expect("found");
    assert!(found.polls.ends_with("store_status_sample_10k.csv"));
    assert!(found.hours.as_deref().is_some_and(|p| p.ends_with("menu_hours.csv")));
    assert!(found.zones.as_deref().is_some_and(|p| p.ends_with("bq-results-20230125-202210-1674678181880.csv")));
    std::fs::write(dir.join("store_status.csv"), "").expect("write");
    assert!(DataFiles::find(&dir).expect("found").polls.ends_with("store_status.csv"), "the exact name wins");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ids_that_begin_like_a_formula_are_unsafe() {
    for start in ['=', '+', '-', '@', '\t', '\r'] {
        let id = format!("{start}1234567890123456789");
        assert!(!is_safe_store_id(&id), "{id:?} starts like a formula");
        if !start.is_control() {
            assert!(is_safe_store_id(&format!("1234567890{start}123456789")), "{start:?} is harmless inside an id");
        }
    }
}

#[test]
fn ids_with_a_control_character_inside_are_unsafe() {
    for control in ['\u{0}', '\u{7}', '\t', '\n', '\r', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}'] {
        let id = format!("store{control}1");
        assert!(!is_safe_store_id(&id), "{id:?} hides a control character");
    }
}

#[test]
fn ids_with_a_bidirectional_override_or_isolate_inside_are_unsafe() {
    let bidi = ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}');
    for mark in bidi {
        let id = format!("store{mark}1");
        assert!(!is_safe_store_id(&id), "{id:?} would show reordered");
    }
    // The neighbours of both ranges are ordinary text as far as SPEC §1 goes.
    for neighbour in ['\u{2029}', '\u{202F}', '\u{2065}', '\u{206A}', 'é', '中'] {
        assert!(is_safe_store_id(&format!("store{neighbour}1")), "{neighbour:?}");
    }
}

#[test]
fn real_shaped_ids_are_safe() {
    for id in ["1369300147522723770", "b860b6c9-d9ee-4743-9ca5-6f693e65a162", "store-1", "a=b", "S+1", "x@y"] {
        assert!(is_safe_store_id(id), "{id}");
    }
}

/// The samples of a summary as (line, reason), for comparing with what a test expects.
fn seen(summary: &FileSummary) -> Vec<(u64, RejectReason)> {
    summary.samples.iter().map(|r| (r.line, r.reason)).collect()
}

#[test]
fn polls_with_unsafe_ids_are_rejected_row_by_row_and_the_rest_load() {
    // Surrounding white space is trimmed before the check (SPEC §1), so a tab in front of a safe id is
    // dropped, and a tab or space in front of a formula does not smuggle it past the check. The quoted id
    // on line 5 holds a line break (a control character), so every row after it starts a line later.
    let text = "store_id,timestamp_utc,status\n\
                1369300147522723770,2024-01-01 00:00:00,active\n\
                \"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",2024-01-01 00:00:00,active\n\
                +1,2024-01-01 00:00:00,active\n\
                \"multi\nline\",2024-01-01 00:00:00,active\n\
                -1,2024-01-01 00:00:00,active\n\
                @SUM(A1),2024-01-01 00:00:00,active\n\
                \"\t=1\",2024-01-01 00:00:00,active\n\
                \" \r@1\",2024-01-01 00:00:00,active\n\
                \"a\u{1}b\",2024-01-01 00:00:00,active\n\
                ab\u{202E}cd,2024-01-01 00:00:00,active\n\
                \"\t42\",2024-01-01 00:00:00,inactive\n\
                b860b6c9-d9ee-4743-9ca5-6f693e65a162,2024-01-01 00:00:00,active\n";
    let mut stores = StoreIds::new();
    let file =
        read_polls_bytes(Path::new("store_status.csv"), text.as_bytes(), &mut stores, FAR_FUTURE).expect("reads");
    let s = &file.summary;
    assert_eq!((s.rows_read, s.accepted, s.rejected_total()), (12, 3, 9), "{s}");
    let unsafe_at = |lines: &[u64]| lines.iter().map(|&l| (l, RejectReason::UnsafeStoreId)).collect::<Vec<_>>();
    assert_eq!(seen(s), unsafe_at(&[3, 4, 5, 7, 8, 9, 10, 11, 12]));
    assert_eq!(s.samples[0].value, "=HYPERLINK(\"http://x\",\"y\")", "the sample shows the id as written");
    assert_eq!(
        stores.iter().collect::<Vec<_>>(),
        vec!["1369300147522723770", "42", "b860b6c9-d9ee-4743-9ca5-6f693e65a162"]
    );
    assert_eq!(s.to_string(), "store_status.csv: 12 rows, 3 accepted, 9 rejected (unsafe_store_id 9)");
}

#[test]
fn hours_and_zones_reject_unsafe_ids_with_the_same_rule_and_number_crlf_lines_right() {
    // CRLF ends and an empty line: csv reports a record where the previous one ended, which is before
    // the `\n` and the empty line; the readers number the line the record is on.
    let mut stores = StoreIds::new();
    let hours = read_hours_bytes(
        Path::new("menu_hours.csv"),
        b"store_id,dayOfWeek,start_time_local,end_time_local\r\n=1+2,0,09:00,17:00\r\na,0,09:00,17:00\r\n\r\n\
          \"b\xE2\x80\xAEc\",1,09:00,17:00\r\n\"-3\",2,09:00,17:00\r\n",
        &mut stores,
    )
    .expect("reads");
    assert_eq!(hours.rows.len(), 1);
    let unsafe_at = |lines: &[u64]| lines.iter().map(|&l| (l, RejectReason::UnsafeStoreId)).collect::<Vec<_>>();
    assert_eq!(seen(&hours.summary), unsafe_at(&[2, 5, 6]));
    assert!(hours.stores_with_only_rejected_rows.is_empty(), "a rejected id is no store at all");

    let zones = read_zones_bytes(
        Path::new("timezones.csv"),
        b"store_id,timezone_str\r\n\r\na,America/Boise\r\n@cmd,Asia/Beirut\n\"x\x07y\",Asia/Beirut\r\nb,Asia/Beirut",
        &mut stores,
    )
    .expect("reads");
    assert_eq!(zones.rows.iter().map(|r| stores.id(r.store)).collect::<Vec<_>>(), vec!["a", "b"]);
    assert_eq!(seen(&zones.summary), unsafe_at(&[4, 5]));
    assert_eq!(stores.len(), 2, "no unsafe id was interned");
}

/// A row after CRLF ends and empty lines is numbered by the line it starts on, whether the polls are cut
/// into pieces or (after a quote) streamed through one CSV reader.
#[test]
fn polls_number_lines_after_crlf_ends_and_empty_lines() {
    let file = polls("store_id,timestamp_utc,status\r\na,2024-01-01 00:00:00,open\r\n\r\nb,bad,active\r\n");
    assert_eq!(seen(&file.summary), vec![(2, RejectReason::BadStatus), (4, RejectReason::BadTimestamp)]);

    let quoted = polls(
        "store_id,timestamp_utc,status\r\n\"a\",2024-01-01 00:00:00,open\r\n\r\n\r\nb,bad,active\r\n\"c\nd\",x,y\r\ne,bad,active\n",
    );
    assert_eq!(
        seen(&quoted.summary),
        vec![
            (2, RejectReason::BadStatus),
            (5, RejectReason::BadTimestamp),
            (6, RejectReason::UnsafeStoreId),
            (8, RejectReason::BadTimestamp)
        ]
    );
}

#[test]
fn the_sample_data_with_numeric_and_uuid_ids_has_no_unsafe_id() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/sample");
    let data = read_folder(&folder, FAR_FUTURE).expect("reads");
    // The sample's polls file has a few bad rows on purpose (see report-worker's cli test); none is unsafe.
    for summary in &data.summaries {
        assert_eq!(summary.rejected.get(&RejectReason::UnsafeStoreId), None, "{summary}");
        assert!(summary.accepted > 200, "{summary}");
    }
    assert!(data.stores.iter().any(|id| id.len() == 19 && id.bytes().all(|b| b.is_ascii_digit())));
    assert!(data.stores.iter().any(|id| id.len() == 36 && id.matches('-').count() == 4));
}
