//! Scratch folders and the bundled data folders.

use std::path::{Path, PathBuf};

/// A data folder of the report worker's fixtures (`report-worker/tests/fixtures/<name>`): the folders with
/// an expected report, and `worker-mix`, the odd cases every service is tested on.
pub fn report_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../report-worker/tests/fixtures").join(name)
}

/// A new empty folder of its own in the temporary directory, removed with its contents when the value is dropped.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("rm_test_{}", crate::unique_suffix()));
        std::fs::create_dir_all(&path).expect("create a temporary folder");
        TempDir { path }
    }

    /// Writes `text` to the file `name` in the folder and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, text).expect("write a file in the temporary folder");
        path
    }

    /// Removes the file `name`, which must exist.
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.path.join(name)).expect("remove a file in the temporary folder");
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
