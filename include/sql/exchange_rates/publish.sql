-- The checked row out of the stage and into exchange_rates, in the caller's transaction: upserted on
-- (symbol, rate_at), so re-running a minute rewrites its row instead of adding one.
WITH published AS (
    DELETE FROM exchange_rates_staged
    WHERE symbol = %(symbol)s AND rate_at = %(rate_at)s
    RETURNING symbol, rate, rate_at, source_timestamp
)
INSERT INTO exchange_rates (symbol, rate, rate_at, source_timestamp)
SELECT symbol, rate, rate_at, source_timestamp FROM published
ON CONFLICT (symbol, rate_at) DO UPDATE
SET rate = EXCLUDED.rate,
    source_timestamp = EXCLUDED.source_timestamp,
    loaded_at = now();
