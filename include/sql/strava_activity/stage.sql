-- One activity of a raw object into the stage (an activity listed twice by overlapping pages is
-- staged once, with its last listing).
INSERT INTO strava_activity_staged (raw_key, id, name, type, start_date, distance, moving_time, average_speed,
                                    max_speed, average_cadence, average_heartrate, weighted_average_watts, kilojoules)
VALUES (%(raw_key)s, %(id)s, %(name)s, %(type)s, %(start_date)s, %(distance)s, %(moving_time)s, %(average_speed)s,
        %(max_speed)s, %(average_cadence)s, %(average_heartrate)s, %(weighted_average_watts)s, %(kilojoules)s)
ON CONFLICT (raw_key, id) DO UPDATE
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
    staged_at = now();
