ALTER TABLE polls REMOVE PARTITIONING;
CREATE INDEX polls_polled_at ON polls (polled_at);
