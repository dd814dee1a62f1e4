-- taxi_daily_weather v1: one row per New York calendar day with yellow-taxi trips - the trips of its
-- month's TLC file picked up that day, with that day's weather (Open-Meteo archive, hourly values of
-- the New York day: 23 or 25 hours on DST days). Built per month by nyc_taxi_daily_weather, which
-- replaces the month's days in one transaction. Idempotent.
CREATE TABLE IF NOT EXISTS taxi_daily_weather (
    day              date PRIMARY KEY,                    -- New York calendar day (TLC pickup date)
    trips            bigint NOT NULL CHECK (trips > 0),
    total_fare       double precision,                    -- sum of fare_amount, USD (NULL fares left out)
    mean_fare        double precision,
    mean_distance    double precision,                    -- mean trip_distance, miles
    temperature_min  double precision NOT NULL,           -- hourly 2 m temperature of the day, °C
    temperature_mean double precision NOT NULL,
    temperature_max  double precision NOT NULL,
    precipitation    double precision NOT NULL,           -- mm fallen during the day (sum of hourly sums)
    weather_hours    smallint NOT NULL CHECK (weather_hours BETWEEN 23 AND 25),
    loaded_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (temperature_min <= temperature_mean AND temperature_mean <= temperature_max)
);
