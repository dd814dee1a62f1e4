-- taxi_daily_weather v2: where a month's days wait for their checks. build_month stages the month
-- here, checks it here, and only then replaces the month in taxi_daily_weather (publish_month.sql),
-- in one transaction: a month that fails a check never reaches the table readers use, and stays
-- here, named in the error, until the month is built again. No CHECK constraints: a bad day must be
-- stageable to be inspected.
CREATE TABLE IF NOT EXISTS taxi_daily_weather_staged (
    day              date PRIMARY KEY,
    trips            bigint NOT NULL,
    total_fare       double precision,
    mean_fare        double precision,
    mean_distance    double precision,
    temperature_min  double precision NOT NULL,
    temperature_mean double precision NOT NULL,
    temperature_max  double precision NOT NULL,
    precipitation    double precision NOT NULL,
    weather_hours    smallint NOT NULL,
    staged_at        timestamptz NOT NULL DEFAULT now()
);
