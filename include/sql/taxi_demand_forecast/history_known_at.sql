-- The taxi_daily_weather days a forecast issued at %(issue_instant)s could know: before the issue date,
-- and of a month whose TLC file was out by then - its first Last-Modified as recorded when loaded
-- (tlc_loaded_files.first_published: a republished month counts from its first publication). A month loaded without a
-- record counts from the 26th of the second month after it, the latest day the TLC publishes on
-- (devstack/standins/tlc_publisher.py cites the real dates). Sorted by day.
SELECT w.day, w.trips, w.temperature_min, w.temperature_mean, w.temperature_max, w.precipitation
FROM taxi_daily_weather AS w
LEFT JOIN tlc_loaded_files AS f ON f.data_month = date_trunc('month', w.day)::date
WHERE w.day < %(issued_on)s
  AND COALESCE(f.first_published, date_trunc('month', w.day) + interval '2 months 25 days') <= %(issue_instant)s
ORDER BY w.day;
