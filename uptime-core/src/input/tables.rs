//! The two small files: business hours and time zones (tens of thousands of rows; one thread suffices).

use std::collections::HashMap;
use std::path::Path;

use super::{
    FileKind, FileSummary, HoursFile, HoursRow, InputError, RejectReason, StoreIds, ZoneRow, ZonesFile,
    column_positions, display_name, parse, read_file, record_start_line, store_id, trim,
};

/// Calls `row(line, record, summary)` for each data row after checking the header has `kind`'s columns.
fn each_row(
    path: &Path,
    bytes: &[u8],
    kind: FileKind,
    mut row: impl FnMut(u64, &csv::ByteRecord, &[usize], &mut FileSummary),
) -> Result<FileSummary, InputError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    let found = reader
        .read_byte_record(&mut record)
        .map_err(|e| InputError::BadHeader { file: path.to_owned(), problem: e.to_string() })?;
    let columns = if found {
        column_positions(path, kind, &record)?
    } else {
        return Err(InputError::MissingColumn {
            file: path.to_owned(),
            column: "store_id".into(),
            header: String::new(),
        });
    };
    let mut summary = FileSummary { file: display_name(path), ..FileSummary::default() };
    loop {
        let line = record_start_line(bytes, reader.position());
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                summary.rows_read += 1;
                let line = record.position().map_or(line, |p| record_start_line(bytes, p));
                if columns.iter().any(|&c| record.get(c).is_none()) {
                    summary.reject(line, RejectReason::MalformedRow, &super::joined(&record));
                } else {
                    row(line, &record, &columns, &mut summary);
                }
            }
            Err(_) => {
                summary.rows_read += 1;
                summary.reject(line, RejectReason::MalformedRow, b"");
            }
        }
    }
    Ok(summary)
}

fn field<'r>(record: &'r csv::ByteRecord, columns: &[usize], i: usize) -> &'r [u8] {
    record.get(columns[i]).unwrap_or_default()
}

pub fn read_hours(path: &Path, stores: &mut StoreIds) -> Result<HoursFile, InputError> {
    read_hours_bytes(path, &read_file(path)?, stores)
}

/// Reads business hours. Columns: store_id, dayOfWeek (or day), start_time_local, end_time_local.
pub fn read_hours_bytes(path: &Path, bytes: &[u8], stores: &mut StoreIds) -> Result<HoursFile, InputError> {
    let mut rows = Vec::new();
    // Per store: (accepted rows, rejected rows), to find stores whose rows were all rejected.
    let mut tally: HashMap<u32, (u32, u32)> = HashMap::new();
    let summary = each_row(path, bytes, FileKind::Hours, |line, record, columns, summary| {
        let raw_store = field(record, columns, 0);
        let id = match store_id(raw_store) {
            Ok(id) => id,
            Err(reason) => return summary.reject(line, reason, raw_store),
        };
        let store = stores.intern(id);
        let checked = (|| {
            let day = field(record, columns, 1);
            let weekday = parse::day_of_week(trim(day)).ok_or((RejectReason::BadDayOfWeek, day))?;
            let start = field(record, columns, 2);
            let start = parse::start_time(trim(start)).ok_or((RejectReason::BadStartTime, start))?;
            let end = field(record, columns, 3);
            let end = parse::end_time(trim(end)).ok_or((RejectReason::BadEndTime, end))?;
            Ok(HoursRow { store, weekday, start, end })
        })();
        let counts = tally.entry(store).or_default();
        match checked {
            Ok(row) => {
                counts.0 += 1;
                summary.accepted += 1;
                rows.push(row);
            }
            Err((reason, value)) => {
                counts.1 += 1;
                summary.reject(line, reason, value);
            }
        }
    })?;
    let mut stores_with_only_rejected_rows: Vec<u32> =
        tally.into_iter().filter(|(_, (ok, bad))| *ok == 0 && *bad > 0).map(|(s, _)| s).collect();
    stores_with_only_rejected_rows.sort_unstable();
    let mut summary = summary;
    summary.note(
        "stores whose hour rows were all rejected (open all the time)",
        stores_with_only_rejected_rows.len() as u64,
    );
    Ok(HoursFile { rows, stores_with_only_rejected_rows, summary })
}

pub fn read_zones(path: &Path, stores: &mut StoreIds) -> Result<ZonesFile, InputError> {
    read_zones_bytes(path, &read_file(path)?, stores)
}

/// Reads time zones. Columns: store_id, timezone_str. An unknown zone is kept as written but has
/// `zone: None` (the store is then in America/Chicago); a later row for the same store replaces an earlier one.
pub fn read_zones_bytes(path: &Path, bytes: &[u8], stores: &mut StoreIds) -> Result<ZonesFile, InputError> {
    let mut by_store: HashMap<u32, usize> = HashMap::new();
    let mut rows: Vec<ZoneRow> = Vec::new();
    let mut replaced = 0u64;
    let mut summary = each_row(path, bytes, FileKind::Zones, |line, record, columns, summary| {
        let raw_store = field(record, columns, 0);
        let id = match store_id(raw_store) {
            Ok(id) => id,
            Err(reason) => return summary.reject(line, reason, raw_store),
        };
        let store = stores.intern(id);
        let name = String::from_utf8_lossy(trim(field(record, columns, 1))).into_owned();
        let zone = super::known_zone(&name);
        summary.accepted += 1;
        let row = ZoneRow { store, name, zone };
        match by_store.get(&store) {
            Some(&i) => {
                replaced += 1;
                rows[i] = row;
            }
            None => {
                by_store.insert(store, rows.len());
                rows.push(row);
            }
        }
    })?;
    let unknown = rows.iter().filter(|r| r.zone.is_none()).count() as u64;
    summary.note("unknown time zones (America/Chicago used)", unknown);
    summary.note("stores listed again (the later row won)", replaced);
    Ok(ZonesFile { rows, summary })
}
