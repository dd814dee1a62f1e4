-- yellow_taxi_trips v2: the two fees only the TLC's parquet files carry (include/tlc_eras.py) -
-- airport_fee (from the 2019 files on, NULL in the months whose file has no value) and
-- cbd_congestion_fee (the Manhattan congestion relief zone toll, files from 2025-01 on). NULL for
-- every month loaded from the course's CSV mirror, which has neither.
--
-- Added in place to the partitioned table, so every existing partition gets both columns (NULL in
-- its rows: a catalog change, no rewrite, no reload). Idempotent, and free once applied: ALTER TABLE
-- takes the table's exclusive lock even when IF NOT EXISTS finds the column, and this file runs
-- before every load - so it only alters when a column is missing (the catalog lookup locks nothing),
-- and then waits at most 60 s for readers (like the publish's swap; the load fails and is retried).
DO $$
BEGIN
    IF EXISTS (
        SELECT FROM unnest(ARRAY['airport_fee', 'cbd_congestion_fee']) AS wanted(name)
        WHERE NOT EXISTS (SELECT FROM pg_attribute
                          WHERE attrelid = 'yellow_taxi_trips'::regclass AND attname = wanted.name
                            AND NOT attisdropped)
    ) THEN
        PERFORM set_config('lock_timeout', '60s', true);
        ALTER TABLE yellow_taxi_trips
            ADD COLUMN IF NOT EXISTS "airport_fee"        double precision,
            ADD COLUMN IF NOT EXISTS "cbd_congestion_fee" double precision;
    END IF;
END
$$;
