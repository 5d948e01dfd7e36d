-- The rows of a large polls load, written here in parallel and then moved into polls by one statement in
-- the transaction that finishes the load record, so a reader sees a load wholly or not at all. Rows here
-- belong to a load that is running or that stopped before finishing; the next load clears them. Same
-- column types as polls; load_id first so one load's rows are one range.
CREATE TABLE polls_staging (
    load_id BIGINT UNSIGNED NOT NULL,
    store_key INT UNSIGNED NOT NULL,
    polled_at DATETIME(6) NOT NULL,
    active BOOLEAN NOT NULL,
    PRIMARY KEY (load_id, store_key, polled_at)
) ENGINE = InnoDB;
