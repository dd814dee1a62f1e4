-- taxi_demand_forecast_accuracy v2: the same model's MAPE on the same days had it been given the weather
-- as observed (taxi_daily_weather) instead of as forecast at issue time - the part of the error that is
-- the weather forecast's. NULL for scores stored before.
ALTER TABLE taxi_demand_forecast_accuracy ADD COLUMN IF NOT EXISTS mape_observed_weather double precision;
