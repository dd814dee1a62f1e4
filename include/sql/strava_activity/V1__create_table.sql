-- strava_activity v1: one row per Strava activity id, upserted by strava_data_pipeline.
-- Idempotent: safe to run before every load. Speeds, distances and the rest stay double precision.
CREATE TABLE IF NOT EXISTS strava_activity (
    id                     bigint           PRIMARY KEY,
    name                   text             NOT NULL,
    type                   text             NOT NULL,
    start_date             timestamptz      NOT NULL,
    distance               double precision NOT NULL,
    moving_time            double precision NOT NULL,
    average_speed          double precision NOT NULL,
    max_speed              double precision NOT NULL,
    average_cadence        double precision,
    average_heartrate      double precision,
    weighted_average_watts double precision,
    kilojoules             double precision,
    loaded_at              timestamptz      NOT NULL DEFAULT now()
);
