DROP TABLE report_chunks;
DROP TABLE reports;
