DROP TABLE store_timezones;
DROP TABLE business_hours;
DROP TABLE current_snapshots;
DROP TABLE snapshots;
DROP TABLE loads;
