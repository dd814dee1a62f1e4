-- strava_sync_state v1: how far strava_data_pipeline's loads reach, kept with the data they
-- describe (updated in the load's transaction). `synced_until` is the `before` bound of the last
-- successful load: the next run looks back from it, so a paused or failing pipeline catches up on
-- everything uploaded meanwhile, whatever the activities' start times.
CREATE TABLE IF NOT EXISTS strava_sync_state (
    stream       text        PRIMARY KEY,
    synced_until timestamptz NOT NULL,
    loaded_at    timestamptz NOT NULL DEFAULT now()
);
