-- Issue 13: options of a report and idempotent triggers.
-- * reports.unknown_after_minutes: the gap horizon of SPEC §2b the report was asked for (1 to 1440); NULL
--   is none, the six columns of SPEC §2. Reports share a computation only with the same value.
ALTER TABLE reports
    ADD COLUMN unknown_after_minutes SMALLINT UNSIGNED NULL;

-- * idempotency_keys: an Idempotency-Key of POST /trigger_report and the report it created, for 24 h.
--   body_digest: SHA-256 (hex) of the trigger's options, so a reuse with other options is refused.
--   client: the caller's token digest (hex): keys of two callers never meet.
--   created_at: keys older than 24 h are ignored and deleted by the gateway's sweep along its index.
CREATE TABLE idempotency_keys (
    idempotency_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    client CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    body_digest CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    report_id CHAR(21) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at DATETIME(6) NOT NULL,
    PRIMARY KEY (client, idempotency_key),
    KEY idempotency_keys_created (created_at)
);

-- GET /reports lists the newest reports first.
CREATE INDEX reports_created ON reports (created_at);
