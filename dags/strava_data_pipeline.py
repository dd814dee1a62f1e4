"""Strava activities every hour: OAuth2 token from Redis -> raw JSON in S3 -> validated upsert
into Postgres (strava seed, without its flaws)."""

from datetime import UTC, datetime

from airflow.sdk import CronDataIntervalTimetable, Param, Variable, dag, task

from include.dag_defaults import DEFAULT_ARGS
from include.http_api import base_url
from include.strava import (
    CLIENT_VARIABLE,
    CONN_ID,
    SECRET_VARIABLE,
    StravaRetryPolicy,
    fetch_activities,
    interval_bounds,
    read_raw_activities,
    redis_client,
    upsert_activities,
    validate_activities,
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
                                  description="Fetch every activity since the account began, not just this hour's")},
    tags=["strava", "oauth2", "redis", "s3", "postgres"],
    doc_md="""
### Strava activities
1. `extract_activities`: token from Redis (`redis_default`, key `STRAVA_TOKEN`), refreshed at the
   `strava` connection's `/oauth/token` when expired (every new token is saved to Redis first);
   every page of `/api/v3/athlete/activities` for the run's data interval (or all history with the
   `full_history` param), raw JSON to `s3://lifedata/stravaact/<ts_nodash>.json`. Only the key
   goes through XCom.
2. `load_activities`: validates every record (pydantic) and upserts them into `strava_activity`
   in one transaction. Any invalid record fails the run, naming each bad id and field; nothing is
   loaded then. Rate limits and outages are retried with backoff; token and secret are masked.
First time: put a token into Redis with `make strava-token` (README, "Strava setup").
""",
)
def strava_data_pipeline():
    @task(retries=4, retry_policy=StravaRetryPolicy())
    def extract_activities(data_interval_start=None, data_interval_end=None, params=None, dag_run=None) -> str:
        after, before = interval_bounds(data_interval_start, data_interval_end, params["full_history"])
        activities = fetch_activities(
            after, before,
            client_id=Variable.get(CLIENT_VARIABLE, default=""),
            client_secret=Variable.get(SECRET_VARIABLE, default=""),
            base_url=base_url(CONN_ID),
            redis_client=redis_client(),
        )
        return write_raw_activities(activities, dag_run)

    @task
    def load_activities(raw_key: str) -> int:
        return upsert_activities(validate_activities(read_raw_activities(raw_key)))

    load_activities(extract_activities())


strava_data_pipeline()
