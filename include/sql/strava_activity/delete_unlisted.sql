-- Activities that started inside the window just read in full, yet Strava no longer lists them
-- (not in the raw object's staged activities): deleted by the athlete (or made private). The window
-- is exclusive at both ends, as Strava's after/before are.
DELETE FROM strava_activity
WHERE start_date > to_timestamp(%(after)s)
  AND start_date < to_timestamp(%(before)s)
  AND id NOT IN (SELECT id FROM strava_activity_staged WHERE raw_key = %(raw_key)s);
