-- exchange_rates v2: where a run's rate waits for its checks. load_exchange_rate stages the row
-- here, the checks run here, and publish moves it into exchange_rates (publish.sql): a rate that
-- fails a check never reaches the table readers use, and stays here, named in the error, until a
-- re-run of its minute replaces it. No CHECK on rate: a bad quote must be stageable to be inspected.
CREATE TABLE IF NOT EXISTS exchange_rates_staged (
    symbol           text             NOT NULL,
    rate             double precision NOT NULL,
    rate_at          timestamptz      NOT NULL,
    source_timestamp timestamptz,
    run_id           text,
    staged_at        timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, rate_at)
);
