-- The model of the newest forecast issued before a date: the previous published model.
SELECT model_version
FROM taxi_demand_forecast
WHERE issued_on < %(before)s
ORDER BY issued_on DESC, day
LIMIT 1;
