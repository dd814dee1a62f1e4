-- The checked activities of one raw object into strava_activity: an edited activity (new name,
-- corrected distance...) updates its row; nothing is duplicated.
INSERT INTO strava_activity (id, name, type, start_date, distance, moving_time, average_speed, max_speed,
                             average_cadence, average_heartrate, weighted_average_watts, kilojoules)
SELECT id, name, type, start_date, distance, moving_time, average_speed, max_speed,
       average_cadence, average_heartrate, weighted_average_watts, kilojoules
FROM strava_activity_staged
WHERE raw_key = %(raw_key)s
ON CONFLICT (id) DO UPDATE
SET name = EXCLUDED.name,
    type = EXCLUDED.type,
    start_date = EXCLUDED.start_date,
    distance = EXCLUDED.distance,
    moving_time = EXCLUDED.moving_time,
    average_speed = EXCLUDED.average_speed,
    max_speed = EXCLUDED.max_speed,
    average_cadence = EXCLUDED.average_cadence,
    average_heartrate = EXCLUDED.average_heartrate,
    weighted_average_watts = EXCLUDED.weighted_average_watts,
    kilojoules = EXCLUDED.kilojoules,
    loaded_at = now();
