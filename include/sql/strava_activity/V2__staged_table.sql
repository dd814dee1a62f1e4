-- strava_activity v2: where a run's activities wait for their checks, keyed by the raw object they
-- were read from. load_activities stages them here, the checks run here, and publish moves them into
-- strava_activity (publish_upsert.sql, delete_unlisted.sql): an activity that fails a check never
-- reaches the table readers use, and stays here, named in the error, until a re-run of that raw
-- object replaces it. No CHECK constraints: a bad record must be stageable to be inspected.
CREATE TABLE IF NOT EXISTS strava_activity_staged (
    raw_key                text             NOT NULL,
    id                     bigint           NOT NULL,
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
    staged_at              timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (raw_key, id)
);
