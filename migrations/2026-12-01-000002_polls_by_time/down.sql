DROP INDEX polls_polled_at ON polls;
