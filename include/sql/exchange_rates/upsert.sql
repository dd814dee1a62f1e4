-- Re-running a run rewrites its row instead of adding one.
INSERT INTO exchange_rates (symbol, rate, rate_at, source_timestamp)
VALUES (%(symbol)s, %(rate)s, %(rate_at)s, to_timestamp(%(timestamp)s))
ON CONFLICT (symbol, rate_at) DO UPDATE
SET rate = EXCLUDED.rate,
    source_timestamp = EXCLUDED.source_timestamp,
    loaded_at = now();
