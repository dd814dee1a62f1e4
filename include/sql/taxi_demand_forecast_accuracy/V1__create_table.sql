-- taxi_demand_forecast_accuracy v1: how each issued forecast did once its days' actuals arrived
-- (taxi_daily_weather, ~2 months later). One row per issue date and model; scored again (upsert.sql)
-- while more of its 7 days get actuals. MAPE as a fraction (0.05 = 5 %), MAE in trips a day.
-- Idempotent.
CREATE TABLE IF NOT EXISTS taxi_demand_forecast_accuracy (
    issued_on     date NOT NULL,
    model_version text NOT NULL,
    days_scored   integer NOT NULL CHECK (days_scored BETWEEN 1 AND 7),
    mae           double precision NOT NULL,
    mape          double precision NOT NULL,
    baseline_mape double precision,                      -- the seasonal-naive forecast as issued, same days
    scored_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issued_on, model_version)
);
