-- taxi_demand_forecast v1: the published weekly forecasts of nyc_taxi_demand_forecast - per issue date
-- (a Saturday, New York) the 7 New York days after it. An issue date's rows are replaced as a whole
-- (delete_issue.sql + insert_day.sql in one transaction, include/demand_forecast.py store_forecast):
-- re-running an issue date rewrites its 7 rows. A model that fails the gate writes nothing here, so
-- the previous issue's forecast and model stand. No staged twin: the 7 rows are computed and checked
-- in the task that writes them (check_forecast_rows), and nothing else writes them. Idempotent.
CREATE TABLE IF NOT EXISTS taxi_demand_forecast (
    issued_on       date NOT NULL,                        -- issue date (New York)
    day             date NOT NULL,                        -- forecast New York day, issued_on + lead_days
    lead_days       integer NOT NULL CHECK (lead_days BETWEEN 1 AND 7),
    predicted_trips double precision NOT NULL CHECK (predicted_trips > 0),
    model_version   text NOT NULL,                        -- s3://models/nyc_taxi_demand/<model_version>/
    baseline_trips  double precision,                     -- the seasonal-naive forecast as issued (scoring)
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issued_on, day),
    CHECK (day = issued_on + lead_days)
);
