-- Activities that started inside the window just read in full, yet Strava no longer lists them:
-- deleted by the athlete (or made private). The window is exclusive at both ends, as Strava's
-- after/before are.
DELETE FROM strava_activity
WHERE start_date > to_timestamp(%(after)s)
  AND start_date < to_timestamp(%(before)s)
  AND NOT (id = ANY(%(ids)s));
