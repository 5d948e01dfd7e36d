-- Issue 12: one report over many workers.
-- A report of many stores is cut into shards: contiguous ranges of store keys, so a shard reads its polls
-- as ranges of the primary key. The worker that takes the report's job plans it (pins `now` in
-- reports.as_of and the hours and zones snapshots, writes one report_shards row per shard) and publishes
-- one job per shard; any worker computes a shard and stores its part of the CSV (its rows in store-id
-- order). The last shard to be stored merges the parts into the report's CSV and completes the report,
-- in the same transaction.
-- * reports.shards_total: NULL for a report computed whole, else how many shards it was cut into.
-- * reports.shards_done: shards stored so far.
-- * reports.plan_hours_snapshot / plan_zones_snapshot: the snapshots every shard reads, so all of
--   them compute from the same hours and zones.
ALTER TABLE reports
    ADD COLUMN shards_total INT UNSIGNED NULL,
    ADD COLUMN shards_done INT UNSIGNED NULL,
    ADD COLUMN plan_hours_snapshot BIGINT UNSIGNED NULL,
    ADD COLUMN plan_zones_snapshot BIGINT UNSIGNED NULL;

-- One shard of a planned report. Its stores are those with first_store_key <= store_key < end_store_key
-- (NULL: no end). status: Running until its part of the CSV is stored, then Complete.
-- worker: the consumer that stored it (for a person following a report across workers).
CREATE TABLE report_shards (
    report_id CHAR(21) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    shard_no INT UNSIGNED NOT NULL,
    first_store_key INT UNSIGNED NOT NULL,
    end_store_key INT UNSIGNED NULL,
    status VARCHAR(16) NOT NULL,
    attempts INT UNSIGNED NOT NULL DEFAULT 0,
    stores_done INT UNSIGNED NULL,
    stores_total INT UNSIGNED NULL,
    store_count INT UNSIGNED NULL,
    csv_bytes BIGINT UNSIGNED NULL,
    chunks INT UNSIGNED NULL,
    worker VARCHAR(255) NULL,
    started_at DATETIME(6) NULL,
    finished_at DATETIME(6) NULL,
    PRIMARY KEY (report_id, shard_no)
) ENGINE = InnoDB;

-- A shard's part of the CSV is stored under its shard_no until the last shard merges the parts; the
-- report's CSV is then shard_no 0's chunks, as for a report computed whole.
ALTER TABLE report_chunks
    ADD COLUMN shard_no INT UNSIGNED NOT NULL DEFAULT 0 AFTER report_id,
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (report_id, shard_no, seq);

-- The report workers alive now, each refreshing its row every few seconds. Shard jobs reach workers
-- through the shard queues; each worker ranks itself among the live ones to choose which queues it
-- consumes first (its consumer priority), so the shards of consecutive reports keep landing on the
-- worker that holds their data.
CREATE TABLE report_workers (
    worker VARCHAR(255) NOT NULL,
    started_at DATETIME(6) NOT NULL,
    heartbeat_at DATETIME(6) NOT NULL,
    PRIMARY KEY (worker)
) ENGINE = InnoDB;
