//! `report-worker compute --data <DIR> [--out <FILE>]`: the report of a folder of CSV files, offline.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;

use shared_model::input::{self, DataFiles, FileSummary, InputError, StoreIds};

use crate::engine::{self, Inputs, Micros};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{}: cannot write the report: {source}", .file.display())]
    Write { file: PathBuf, source: std::io::Error },
}

/// What a run loaded and computed, for the summary on stderr.
#[derive(Debug)]
pub struct ComputeOutcome {
    pub summaries: Vec<FileSummary>,
    pub warnings: Vec<String>,
    pub now: Option<Micros>,
    pub stores: usize,
}

/// The loaded data set, in the engine's terms.
pub struct LoadedData {
    pub stores: StoreIds,
    pub polls: Vec<shared_model::input::Poll>,
    pub hours: Vec<shared_model::input::HoursRow>,
    pub zones: HashMap<u32, chrono_tz::Tz>,
    pub summaries: Vec<FileSummary>,
    pub warnings: Vec<String>,
}

/// Reads the three files of a folder. `loaded_at` is the moment of loading (for the future-poll rule).
pub fn load_folder(folder: &Path, loaded_at: Micros) -> Result<LoadedData, InputError> {
    let files = DataFiles::find(folder)?;
    let mut stores = StoreIds::new();
    let polls = input::read_polls(&files.polls, &mut stores, loaded_at)?;
    let mut summaries = vec![polls.summary];
    let mut warnings = Vec::new();
    let hours = match &files.hours {
        Some(path) => {
            let file = input::read_hours(path, &mut stores)?;
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
            let file = input::read_zones(path, &mut stores)?;
            summaries.push(file.summary);
            file.rows.into_iter().filter_map(|r| r.zone.map(|tz| (r.store, tz))).collect()
        }
        None => {
            warnings.push(format!("{}: no time zone file: every store is in America/Chicago", folder.display()));
            HashMap::new()
        }
    };
    Ok(LoadedData { stores, polls: polls.polls, hours, zones, summaries, warnings })
}

/// Loads a folder, computes the report and writes it to `out` (stdout when `None`). A file is written
/// whole or not at all: the report goes to a temporary file beside it that is renamed at the end.
pub fn compute(folder: &Path, out: Option<&Path>, loaded_at: Micros) -> Result<ComputeOutcome, CliError> {
    let data = load_folder(folder, loaded_at)?;
    let now = engine::latest_poll(&data.polls);
    let rows = match now {
        Some(now) => {
            let inputs = Inputs { polls: &data.polls, hours: &data.hours, zones: &data.zones };
            engine::compute(inputs, now, &AtomicUsize::new(0))
        }
        None => Vec::new(),
    };
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 16, w);
        engine::write_report(&mut w, &rows, |key| data.stores.id(key))?;
        w.flush()
    };
    match out {
        None => {
            write(&mut std::io::stdout().lock()).map_err(|source| CliError::Write { file: "stdout".into(), source })?
        }
        Some(path) => {
            let tmp = path.with_file_name(format!(
                ".{}.tmp-{}",
                path.file_name().map_or_else(|| "report".into(), |n| n.to_string_lossy()),
                std::process::id()
            ));
            let result = std::fs::File::create(&tmp)
                .and_then(|mut f| write(&mut f).and_then(|()| f.sync_all()))
                .and_then(|()| std::fs::rename(&tmp, path));
            if let Err(source) = result {
                let _ = std::fs::remove_file(&tmp);
                return Err(CliError::Write { file: path.to_owned(), source });
            }
        }
    }
    Ok(ComputeOutcome { summaries: data.summaries, warnings: data.warnings, now, stores: rows.len() })
}
