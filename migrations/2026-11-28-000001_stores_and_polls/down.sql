DROP TABLE polls;
DROP TABLE stores;
