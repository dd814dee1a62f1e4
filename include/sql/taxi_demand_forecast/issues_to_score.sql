-- Issue dates with at least one forecast day whose actual now exists in taxi_daily_weather, and whose
-- stored score (if any) covers fewer days than can be scored now: what a scoring pass has to (re)do.
SELECT f.issued_on, f.model_version, count(w.day) AS with_actuals
FROM taxi_demand_forecast AS f
LEFT JOIN taxi_daily_weather AS w ON w.day = f.day
LEFT JOIN taxi_demand_forecast_accuracy AS a ON a.issued_on = f.issued_on AND a.model_version = f.model_version
GROUP BY f.issued_on, f.model_version, a.days_scored
HAVING count(w.day) > 0 AND count(w.day) > COALESCE(a.days_scored, 0)
ORDER BY f.issued_on;
