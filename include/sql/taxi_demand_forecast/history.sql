-- The days known at issue time: taxi_daily_weather strictly before the issue date, oldest first
-- (include/demand_forecast.py training_rows checks the bound again).
SELECT day, trips, temperature_min, temperature_mean, temperature_max, precipitation
FROM taxi_daily_weather
WHERE day < %(issued_on)s
ORDER BY day;
