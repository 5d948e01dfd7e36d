//! The ingest worker's integration tests against the real MariaDB, one binary: a load run (`load`),
//! several workers and readers at once, the loop and the binary's commands (`workers`), loads killed
//! mid-way (`interrupted`), file limits and retention (`limits`), and the SQL that differs between MySQL 8 and MariaDB (`flavours`). Each test
//! has its own database and data folder (`test_support`).

mod flavours;
mod helpers;
mod interrupted;
mod limits;
mod load;
mod workers;
