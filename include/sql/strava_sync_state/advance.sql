-- The watermark only moves forward: re-running an older run never rewinds it.
INSERT INTO strava_sync_state (stream, synced_until)
VALUES (%(stream)s, to_timestamp(%(before)s))
ON CONFLICT (stream) DO UPDATE
SET synced_until = GREATEST(strava_sync_state.synced_until, EXCLUDED.synced_until),
    loaded_at = now();
