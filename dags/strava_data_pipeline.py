"""Strava activities every hour: OAuth2 token from Redis -> raw JSON in S3 -> validated upsert
into Postgres (strava seed, without its flaws)."""

from datetime import UTC, datetime

from airflow.sdk import CronDataIntervalTimetable, Param, Variable, dag, task

from include.assets import STRAVA_ACTIVITY, STRAVA_RAW_ACTIVITIES
from include.dag_defaults import DEFAULT_ARGS
from include.http_api import base_url
from include.quality import strava_activity_checks
from include.strava import (
    CLIENT_VARIABLE,
    CONN_ID,
    SECRET_VARIABLE,
    StravaRetryPolicy,
    fetch_activities,
    publish_activities,
    read_raw_activities,
    read_watermark,
    redis_client,
    stage_activities,
    sync_window,
    validate_activities,
    window_extra,
    write_raw_activities,
)


@dag(
    dag_id="strava_data_pipeline",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # one token in Redis: two runs refreshing it at once could lose the newest
    default_args=DEFAULT_ARGS,
    params={"full_history": Param(False, type="boolean",
                                  description="Read every activity since the account began (the first load and "
                                              "the daily 00:00 UTC run do it anyway)")},
    tags=["strava", "oauth2", "redis", "s3", "postgres"],
    doc_md="""
### Strava activities
Strava lists an activity only once it is uploaded - minutes to days after it ends - and filters
by start time. So every run reads the activities that started from 7 days before the last
successful load (the watermark in `strava_sync_state`) up to its own data interval end; the upsert
absorbs the overlap. The first load, the run ending at 00:00 UTC each day and a run with
`full_history` read the whole history, so late edits and deletions arrive within a day.
1. `extract_activities`: token from Redis (`redis_default`, key `STRAVA_TOKEN`), refreshed at the
   `strava` connection's `/oauth/token` when expired (every new token is saved to Redis first);
   every page of `/api/v3/athlete/activities` for the window, raw JSON to
   `s3://lifedata/stravaact/<ts_nodash>.json`. Only the key and the window go through XCom.
2. `load_activities`: validates every record (pydantic) and stages them in `strava_activity_staged`
   under the raw object's key. Any invalid record fails the run, naming each bad id and field;
   nothing is staged then. Rate limits, outages and answers that broke off are retried (a 429 waits
   for Strava's next 15-minute window); token and secret are masked.
3. `check_columns` / `check_table` (common-sql check operators on the staged rows): ids not null
   and unique, no negative distance, time or speed, every activity started in the window, and as
   many rows as distinct activities in the raw object. A failure names the check, its figures and
   the staged rows, which stay in `strava_activity_staged`; `strava_activity` is not changed.
4. `publish`, in one transaction: upserts the staged activities into `strava_activity`, deletes the
   window's activities Strava no longer lists, advances the watermark, clears the stage, and emits
   the `warehouse.strava_activity` asset event. `extract_activities` emits `lifedata.stravaact`
   (extra: key, window, activities) as soon as the raw object is written.
A trigger without a logical date reads up to the moment it was triggered.
First time: put a token into Redis with `make strava-token` (docs/strava.md).
""",
)
def strava_data_pipeline():
    @task(retries=4, retry_policy=StravaRetryPolicy(), outlets=[STRAVA_RAW_ACTIVITIES])
    def extract_activities(data_interval_end=None, params=None, dag_run=None, outlet_events=None) -> dict:
        # A trigger without a logical date has no data interval: it reads up to the moment it was
        # triggered (run_after, fixed for the run - a re-run reads the same window).
        end = data_interval_end or dag_run.run_after
        after, before = sync_window(end, read_watermark(), params["full_history"])
        activities = fetch_activities(
            after, before,
            client_id=Variable.get(CLIENT_VARIABLE, default=""),
            client_secret=Variable.get(SECRET_VARIABLE, default=""),
            base_url=base_url(CONN_ID),
            redis_client=redis_client(),
        )
        raw_key = write_raw_activities(activities, dag_run)
        outlet_events[STRAVA_RAW_ACTIVITIES].extra = {
            "key": raw_key, "activities": len(activities), **window_extra(after, before)}
        return {"raw_key": raw_key, "after": after, "before": before}

    @task
    def load_activities(extracted: dict) -> dict:
        activities = validate_activities(read_raw_activities(extracted["raw_key"]))
        staged = stage_activities(activities, extracted["raw_key"])
        # For the checks: the staged rows must be the raw object's distinct activities.
        return {**staged, **extracted, "listed": len({activity.id for activity in activities})}

    @task(outlets=[STRAVA_ACTIVITY])
    def publish(loaded: dict, outlet_events=None) -> dict:
        published = publish_activities(loaded["raw_key"], loaded["after"], loaded["before"])
        extra = {"raw_key": loaded["raw_key"], "rows": loaded["listed"], "upserted": published["upserted"],
                 "deleted": published["deleted"], **window_extra(loaded["after"], loaded["before"])}
        outlet_events[STRAVA_ACTIVITY].extra = extra
        return extra

    loaded = load_activities(extract_activities())
    check_columns, check_table = strava_activity_checks(load_task_id="load_activities")
    loaded >> [check_columns, check_table] >> publish(loaded)


strava_data_pipeline()
