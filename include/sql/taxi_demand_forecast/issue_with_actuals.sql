-- One issue's forecast rows with the actual trips of their days where taxi_daily_weather has them.
SELECT f.day, f.lead_days, f.predicted_trips, f.baseline_trips, f.model_version, w.trips
FROM taxi_demand_forecast AS f
LEFT JOIN taxi_daily_weather AS w ON w.day = f.day
WHERE f.issued_on = %(issued_on)s
ORDER BY f.day;
