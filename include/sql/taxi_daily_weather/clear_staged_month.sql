-- The month's staged days: before the month is staged again, and once it is published.
DELETE FROM taxi_daily_weather_staged WHERE day >= %(first_day)s AND day < %(after_day)s;
