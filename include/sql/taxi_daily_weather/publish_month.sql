-- The checked month from the stage into taxi_daily_weather, after delete_month.sql in the same
-- transaction (then the stage's month is cleared).
INSERT INTO taxi_daily_weather (day, trips, total_fare, mean_fare, mean_distance, temperature_min,
                                temperature_mean, temperature_max, precipitation, weather_hours, loaded_at)
SELECT day, trips, total_fare, mean_fare, mean_distance, temperature_min, temperature_mean, temperature_max,
       precipitation, weather_hours, now()
FROM taxi_daily_weather_staged
WHERE day >= %(first_day)s AND day < %(after_day)s;
