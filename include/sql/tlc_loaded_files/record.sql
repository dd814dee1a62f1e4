-- The file version a month of yellow_taxi_trips now holds (run in the swap's transaction).
INSERT INTO tlc_loaded_files (data_month, url, etag, last_modified, bytes, rows, loaded_at, first_published)
VALUES (%(data_month)s, %(url)s, %(etag)s, %(last_modified)s, %(bytes)s, %(rows)s, now(), %(last_modified)s)
ON CONFLICT (data_month) DO UPDATE
SET url = EXCLUDED.url, etag = EXCLUDED.etag, last_modified = EXCLUDED.last_modified, bytes = EXCLUDED.bytes,
    rows = EXCLUDED.rows, loaded_at = EXCLUDED.loaded_at,
    first_published = LEAST(tlc_loaded_files.first_published, EXCLUDED.first_published);
