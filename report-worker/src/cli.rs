//! `report-worker compute --data <DIR> [--out <FILE>] [--unknown-after <MINUTES>]`: the report of a folder
//! of CSV files, offline (with the gap horizon of SPEC §2b when asked).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use uptime_core::engine::{self, Horizon, Inputs, NoProgress};
use uptime_core::input::{self, FileSummary, InputError};
use uptime_core::time::Micros;

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

/// Loads a folder, computes the report and writes it to `out` (stdout when `None`). A file is written
/// whole or not at all: the report goes to a temporary file beside it that is renamed at the end.
pub fn compute(
    folder: &Path,
    out: Option<&Path>,
    horizon: Horizon,
    loaded_at: Micros,
) -> Result<ComputeOutcome, CliError> {
    let data = input::read_folder(folder, loaded_at)?;
    let inputs = Inputs { polls: &data.polls, hours: &data.hours, zones: &data.zones };
    let report = engine::report(inputs, horizon, &NoProgress);
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 16, w);
        report.write_csv(&mut w, |key| data.stores.id(key))?;
        w.flush()
    };
    match out {
        None => {
            write(&mut std::io::stdout().lock()).map_err(|source| CliError::Write { file: "stdout".into(), source })?
        }
        Some(path) => write_whole_or_not_at_all(path, write)?,
    }
    Ok(ComputeOutcome {
        summaries: data.summaries,
        warnings: data.warnings,
        now: report.now,
        stores: report.rows.len(),
    })
}

fn write_whole_or_not_at_all(
    path: &Path,
    write: impl Fn(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), CliError> {
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
    Ok(())
}
