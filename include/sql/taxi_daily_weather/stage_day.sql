INSERT INTO taxi_daily_weather_staged (day, trips, total_fare, mean_fare, mean_distance, temperature_min,
                                       temperature_mean, temperature_max, precipitation, weather_hours)
VALUES (%(day)s, %(trips)s, %(total_fare)s, %(mean_fare)s, %(mean_distance)s, %(temperature_min)s,
        %(temperature_mean)s, %(temperature_max)s, %(precipitation)s, %(weather_hours)s);
