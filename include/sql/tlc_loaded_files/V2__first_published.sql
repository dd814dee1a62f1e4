-- tlc_loaded_files v2: when the month's file first appeared (the earliest Last-Modified we saw for it). A
-- republished month keeps it: a forecast issued between the first publication and the republication knew
-- the month (it trains on the corrected rows now - the corrections are the one thing it could not know).
ALTER TABLE tlc_loaded_files ADD COLUMN IF NOT EXISTS first_published timestamptz;
UPDATE tlc_loaded_files SET first_published = last_modified WHERE first_published IS NULL;
