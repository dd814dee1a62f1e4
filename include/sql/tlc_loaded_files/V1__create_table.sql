-- tlc_loaded_files v1: which version of the TLC's file each month of yellow_taxi_trips holds - the
-- publisher's ETag and Last-Modified as answered when the file was downloaded. Written by the publish
-- step in the transaction that swaps the month in, so it always names what readers see. A month
-- whose file now answers another ETag was republished (the TLC corrects months) and is loaded again
-- (nyc_taxi_republication_watch).
CREATE TABLE IF NOT EXISTS tlc_loaded_files (
    data_month    date PRIMARY KEY,         -- first day of the file's month, as in yellow_taxi_trips
    url           text NOT NULL,            -- where it was downloaded from (no credentials: TLC's files are public)
    etag          text,                     -- as the server sent it, quotes included
    last_modified timestamptz,
    bytes         bigint NOT NULL,
    rows          bigint,                   -- rows in the file
    loaded_at     timestamptz NOT NULL DEFAULT now()
);
