//! Models and queries for `reports` and `report_chunks` (owned by the report-path work).
