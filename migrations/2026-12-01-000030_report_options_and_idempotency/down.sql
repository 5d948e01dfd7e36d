DROP INDEX reports_created ON reports;
DROP TABLE idempotency_keys;
ALTER TABLE reports DROP COLUMN unknown_after_minutes;
