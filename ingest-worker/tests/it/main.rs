//! The ingest worker's integration tests against the real MariaDB, one binary: a load run (`load`), and
//! several workers and readers at once, the loop and the binary's commands (`workers`). Each test has its
//! own database and data folder (`test_support`).

mod helpers;
mod limits;
mod load;
mod workers;
