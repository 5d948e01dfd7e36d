DROP TABLE polls_staging;
