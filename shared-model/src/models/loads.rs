//! Models and queries for the `loads` table (owned by the ingest work).
