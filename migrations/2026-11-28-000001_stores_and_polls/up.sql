-- Store ids are strings of up to 64 bytes compared byte for byte (utf8mb4_bin); everything else refers
-- to a store by its 4-byte surrogate key, so the 1.9 M-row polls table stays narrow and fits in memory.
CREATE TABLE stores (
    store_key INT UNSIGNED NOT NULL AUTO_INCREMENT,
    store_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    PRIMARY KEY (store_key),
    UNIQUE KEY stores_store_id (store_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- One row per (store, instant): the primary key is the upsert key of SPEC §4 and the range-scan order of
-- the report. load_id is the load that last changed the row, so a reader can fetch only what changed.
CREATE TABLE polls (
    store_key INT UNSIGNED NOT NULL,
    polled_at DATETIME(6) NOT NULL,
    active BOOLEAN NOT NULL,
    load_id BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (store_key, polled_at),
    KEY polls_load_id (load_id)
) ENGINE = InnoDB;
