DROP TABLE report_workers;
DELETE FROM report_chunks WHERE shard_no > 0;
ALTER TABLE report_chunks DROP PRIMARY KEY, ADD PRIMARY KEY (report_id, seq), DROP COLUMN shard_no;
DROP TABLE report_shards;
ALTER TABLE reports
    DROP COLUMN plan_zones_snapshot,
    DROP COLUMN plan_hours_snapshot,
    DROP COLUMN shards_done,
    DROP COLUMN shards_total;
