//! Models and queries for the `stores` table (owned by the ingest work).
