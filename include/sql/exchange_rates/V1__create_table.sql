-- exchange_rates v1: one row per symbol and logical date (the run's moment), upserted by
-- connections_and_variables. Idempotent: safe to run before every load.
CREATE TABLE IF NOT EXISTS exchange_rates (
    symbol           text             NOT NULL,
    rate             double precision NOT NULL CHECK (rate > 0),
    rate_at          timestamptz      NOT NULL,
    source_timestamp timestamptz,
    loaded_at        timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, rate_at)
);
