-- A run's rate into the stage; re-running the minute replaces its staged row instead of adding one.
INSERT INTO exchange_rates_staged (symbol, rate, rate_at, source_timestamp, run_id)
VALUES (%(symbol)s, %(rate)s, %(rate_at)s, to_timestamp(%(timestamp)s), %(run_id)s)
ON CONFLICT (symbol, rate_at) DO UPDATE
SET rate = EXCLUDED.rate,
    source_timestamp = EXCLUDED.source_timestamp,
    run_id = EXCLUDED.run_id,
    staged_at = now();
