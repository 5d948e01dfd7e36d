-- The life of a report row after its trigger (issue 10):
-- * data_*: the data version the trigger saw (settled load id, hours and zones snapshots); a trigger of
--   the same version shares the computation of a Running or Complete report instead of queueing a job.
-- * shares_report_id: the report whose computation and CSV this one shares (NULL: it computes its own).
-- * heartbeat_at: the last sign of life of a worker on the report (start, progress); redeliveries: jobs
--   the gateway's sweep published again because none came.
-- * csv_deleted_at: when the sweep deleted the expired CSV (NULL while it is kept).
ALTER TABLE reports
    ADD COLUMN data_polls_load_id BIGINT UNSIGNED NULL,
    ADD COLUMN data_hours_snapshot BIGINT UNSIGNED NULL,
    ADD COLUMN data_zones_snapshot BIGINT UNSIGNED NULL,
    ADD COLUMN shares_report_id CHAR(21) CHARACTER SET ascii COLLATE ascii_bin NULL,
    ADD COLUMN heartbeat_at DATETIME(6) NULL,
    ADD COLUMN redeliveries INT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN csv_deleted_at DATETIME(6) NULL,
    ADD KEY reports_sharers (shares_report_id),
    ADD KEY reports_data_version (data_polls_load_id, status),
    ADD KEY reports_finished (status, finished_at);
