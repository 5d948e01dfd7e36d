-- The record of every load of every file (SPEC §4).
CREATE TABLE loads (
    load_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    file_kind VARCHAR(16) CHARACTER SET ascii NOT NULL,        -- polls | hours | zones
    file_name VARCHAR(255) NOT NULL,
    file_bytes BIGINT UNSIGNED NULL,
    file_digest VARCHAR(64) CHARACTER SET ascii NULL,          -- content hash; equal digest = unchanged file
    status VARCHAR(16) CHARACTER SET ascii NOT NULL,           -- running | loaded | unchanged | failed
    started_at DATETIME(6) NOT NULL,
    finished_at DATETIME(6) NULL,
    rows_read BIGINT UNSIGNED NOT NULL DEFAULT 0,
    rows_loaded BIGINT UNSIGNED NOT NULL DEFAULT 0,
    rows_rejected BIGINT UNSIGNED NOT NULL DEFAULT 0,
    rejected_by_reason TEXT NULL,                              -- JSON object: reason -> count
    sample_rejections TEXT NULL,                               -- JSON array of {line, reason, value}
    notes TEXT NULL,                                           -- JSON object: note -> count
    error TEXT NULL,
    PRIMARY KEY (load_id),
    KEY loads_by_kind (file_kind, status, load_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Business hours and zones are whole snapshots: rows are written under a new snapshot_id, then the
-- pointer in current_snapshots moves in one transaction, so a reader never sees half of two files.
CREATE TABLE snapshots (
    snapshot_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    file_kind VARCHAR(16) CHARACTER SET ascii NOT NULL,        -- hours | zones
    load_id BIGINT UNSIGNED NOT NULL,
    created_at DATETIME(6) NOT NULL,
    PRIMARY KEY (snapshot_id)
) ENGINE = InnoDB;

-- One row per kind; snapshot_id NULL means "no file": every store open all the time / in America/Chicago.
CREATE TABLE current_snapshots (
    file_kind VARCHAR(16) CHARACTER SET ascii NOT NULL,
    snapshot_id BIGINT UNSIGNED NULL,
    load_id BIGINT UNSIGNED NULL,
    PRIMARY KEY (file_kind)
) ENGINE = InnoDB;
INSERT INTO current_snapshots (file_kind, snapshot_id, load_id) VALUES ('hours', NULL, NULL), ('zones', NULL, NULL);

-- Times are microseconds since local midnight: an end may be 24:00, which no TIME type maps to chrono.
CREATE TABLE business_hours (
    snapshot_id BIGINT UNSIGNED NOT NULL,
    store_key INT UNSIGNED NOT NULL,
    row_no INT UNSIGNED NOT NULL,
    weekday TINYINT UNSIGNED NOT NULL,                         -- 0 = Monday … 6 = Sunday
    start_us BIGINT NOT NULL,
    end_us BIGINT NOT NULL,
    PRIMARY KEY (snapshot_id, store_key, row_no)
) ENGINE = InnoDB;

-- The zone as written; an unknown name is kept and treated as America/Chicago when read.
CREATE TABLE store_timezones (
    snapshot_id BIGINT UNSIGNED NOT NULL,
    store_key INT UNSIGNED NOT NULL,
    timezone_str VARCHAR(64) NOT NULL,
    PRIMARY KEY (snapshot_id, store_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
