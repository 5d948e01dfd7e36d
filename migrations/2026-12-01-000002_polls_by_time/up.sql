-- Polls by time: the ingest's retention deletes the oldest polls in small batches along this index, and
-- reads the newest poll from its end, without a scan of the table.
CREATE INDEX polls_polled_at ON polls (polled_at);
