-- The month's stored days, for its chart.
SELECT day, trips, temperature_min, temperature_mean, temperature_max, precipitation
FROM taxi_daily_weather
WHERE day >= %(first_day)s AND day < %(after_day)s
ORDER BY day;
