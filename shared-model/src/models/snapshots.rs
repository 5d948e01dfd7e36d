//! Models and queries for the `snapshots` table (owned by the ingest work).
