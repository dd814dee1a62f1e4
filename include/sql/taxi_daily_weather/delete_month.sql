-- Every day of the month, before its days are inserted again (same transaction): a day that has no
-- trips any more after a re-load disappears instead of keeping its old row.
DELETE FROM taxi_daily_weather WHERE day >= %(first_day)s AND day < %(after_day)s;
