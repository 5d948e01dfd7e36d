-- Report ids are nanoids: case matters, so ascii_bin.
CREATE TABLE reports (
    report_id CHAR(21) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    status VARCHAR(16) CHARACTER SET ascii NOT NULL,           -- Running | Complete | Failed
    created_at DATETIME(6) NOT NULL,
    queued_at DATETIME(6) NULL,                                -- broker confirmed the job; NULL = still in the outbox
    started_at DATETIME(6) NULL,
    finished_at DATETIME(6) NULL,
    as_of DATETIME(6) NULL,                                    -- the "now" the report used
    stores_done INT UNSIGNED NULL,
    stores_total INT UNSIGNED NULL,
    store_count INT UNSIGNED NULL,
    csv_bytes BIGINT UNSIGNED NULL,
    attempts INT UNSIGNED NOT NULL DEFAULT 0,
    error TEXT NULL,
    PRIMARY KEY (report_id),
    KEY reports_outbox (queued_at, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- The finished CSV in pieces well under the 16 MiB default max_allowed_packet.
CREATE TABLE report_chunks (
    report_id CHAR(21) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    seq INT UNSIGNED NOT NULL,
    data MEDIUMBLOB NOT NULL,
    PRIMARY KEY (report_id, seq)
) ENGINE = InnoDB;
