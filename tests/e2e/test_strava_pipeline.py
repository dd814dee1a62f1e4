"""Strava end to end: real Redis (token), S3 (raw JSON) and Postgres (strava_activity), the Strava
stand-in for the API, whole DAG runs with dag.test()."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devstack.standins.strava import FIRST_ACTIVITY, activity
from include.strava import TOKEN_KEY, StravaRetryPolicy, load_token
from tests.conftest import TEST_STRAVA_SECRET

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "strava_data_pipeline"


@pytest.fixture
def redis(stack):
    from include.strava import redis_client

    client = redis_client()
    client.delete(TOKEN_KEY)
    yield client
    client.delete(TOKEN_KEY)


def _bootstrap(*args: str) -> subprocess.CompletedProcess:
    """`make strava-token` as the user runs it (same module, same environment)."""
    return subprocess.run([sys.executable, "-m", "include.strava_token", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


@pytest.fixture
def token(redis, standin):
    result = _bootstrap("--code", "offline-authorization-code")
    assert result.returncode == 0, result.stderr
    return load_token(redis)


def _dag(dagbag, fast_retries=False):
    dag = copy.deepcopy(dagbag.get_dag(DAG_ID))
    if fast_retries:
        for task in dag.tasks:
            task.retry_delay = timedelta(seconds=1)
            if task.retry_policy is not None:
                task.retry_policy = _FastStravaRetryPolicy()
    return dag


class _FastStravaRetryPolicy(StravaRetryPolicy):
    def evaluate(self, exception, try_number, max_tries, context=None):
        decision = super().evaluate(exception, try_number, max_tries, context)
        if decision.retry_delay is not None:
            decision = type(decision)(action=decision.action, retry_delay=timedelta(seconds=1), reason=decision.reason)
        return decision


def _run(dag, logical_date, conf=None):
    run = dag.test(logical_date=logical_date, run_conf=conf)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _warehouse():
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id="warehouse_db")


def _count() -> int:
    return _warehouse().get_first("SELECT count(*) FROM strava_activity")[0] if _table_exists() else 0


def _table_exists() -> bool:
    return _warehouse().get_first("SELECT to_regclass('strava_activity') IS NOT NULL")[0]


def _expected_activities(until: datetime) -> list[dict]:
    count = int((until - FIRST_ACTIVITY) / timedelta(hours=31)) + 1
    return [activity(i) for i in range(count)]


def test_bootstrap_exchanges_a_code_and_stores_the_token(redis, standin):
    result = _bootstrap("--code", "offline-authorization-code")

    assert result.returncode == 0, result.stderr
    stored = json.loads(redis.get(TOKEN_KEY))
    assert {"access_token", "refresh_token", "expires_at"} <= set(stored)
    assert stored["access_token"] not in result.stdout and stored["refresh_token"] not in result.stdout


def test_bootstrap_with_a_wrong_code_says_so(redis, standin):
    result = _bootstrap("--code", "not-the-code")

    assert result.returncode == 1
    assert "Strava refused the authorization code: 400" in result.stderr
    assert redis.get(TOKEN_KEY) is None


def test_first_run_loads_every_activity_of_full_history(dagbag, token, stack):
    _warehouse().run("DROP TABLE IF EXISTS strava_activity")
    when = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

    run, states = _run(_dag(dagbag), when, {"full_history": True})

    assert run.state == "success", states
    expected = [a for a in _expected_activities(when) if a["start_date"] < when.strftime("%Y-%m-%dT%H:%M:%SZ")]
    assert len(expected) > 400  # several pages of 200
    assert _count() == len(expected)
    raw_key = f"stravaact/{when.strftime('%Y%m%dT%H%M%S')}.json"
    raw = json.loads(stack.get_object("lifedata", raw_key))
    assert {a["id"] for a in raw} == {a["id"] for a in expected}
    sample = expected[7]
    row = _warehouse().get_first(
        "SELECT id, name, type, distance, average_speed, max_speed, average_heartrate, kilojoules "
        "FROM strava_activity WHERE id = %s", [sample["id"]])
    assert row == (sample["id"], sample["name"], sample["type"], sample["distance"], sample["average_speed"],
                   sample["max_speed"], sample.get("average_heartrate"), sample.get("kilojoules"))
    assert sample["id"] > 2**32 and isinstance(row[4], float) and row[4] != int(row[4])  # never truncated
    assert run.get_task_instance("extract_activities").xcom_pull(task_ids="extract_activities") == raw_key


def test_hourly_run_fetches_only_its_data_interval(dagbag, token, standin):
    standin.forget_requests()
    a = activity(400)  # mid-2025: after the DAG's start_date, or the run would schedule no task
    start = datetime.strptime(a["start_date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    hour_end = start.replace(minute=0, second=0) + timedelta(hours=1)

    run, states = _run(_dag(dagbag), hour_end, {"full_history": False})  # covers the hour before hour_end

    assert run.state == "success", states
    calls = [r["query"] for r in standin.requests_seen() if r["path"] == "/api/v3/athlete/activities"]
    assert calls[0]["after"] == str(int((hour_end - timedelta(hours=1)).timestamp()))
    assert calls[0]["before"] == str(int(hour_end.timestamp()))
    assert calls[0]["per_page"] == "200"
    assert [c["page"] for c in calls] == ["1", "2"]  # until an empty page
    assert _warehouse().get_first("SELECT name FROM strava_activity WHERE id = %s", [a["id"]])[0] == a["name"]


def test_rerun_is_idempotent_and_an_edited_activity_is_updated(dagbag, token, standin):
    when = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    dag = _dag(dagbag)
    _run(dag, when, {"full_history": True})
    before = _count()
    edited = activity(11)
    standin.configure(strava_activity_overrides={str(edited["id"]): {"name": "Renamed ✨ run", "distance": 12345.6}})

    run, states = _run(dag, when, {"full_history": True})

    assert run.state == "success", states
    assert _count() == before
    assert _warehouse().get_first("SELECT name, distance FROM strava_activity WHERE id = %s", [edited["id"]]) == \
        ("Renamed ✨ run", 12345.6)


def test_expired_token_is_refreshed_and_the_rotated_token_saved_first(dagbag, token, redis, standin):
    expired = {**token, "expires_at": int(time.time()) - 60, "expires_in": -60}
    redis.set(TOKEN_KEY, json.dumps(expired))

    run, states = _run(_dag(dagbag), datetime.now(UTC).replace(minute=0, second=0, microsecond=0))

    assert run.state == "success", states
    new = json.loads(redis.get(TOKEN_KEY))
    assert new["access_token"] != token["access_token"]
    assert new["refresh_token"] != token["refresh_token"]  # rotated - and the old one is now dead:
    assert new["expires_at"] > time.time() + 3600


def test_missing_token_fails_with_the_bootstrap_command(dagbag, redis, standin, capfd):
    run, states = _run(_dag(dagbag), datetime(2025, 5, 1, tzinfo=UTC))

    assert run.state == "failed"
    assert states["extract_activities"] == "failed"
    out = capfd.readouterr().out
    assert "Strava token missing: Redis key STRAVA_TOKEN is empty" in out and "make strava-token" in out


def test_failed_refresh_names_the_cause_and_loads_nothing(dagbag, token, redis, standin, capfd):
    redis.set(TOKEN_KEY, json.dumps({**token, "expires_at": int(time.time()) - 60, "refresh_token": "revoked-0000"}))
    before = _count()

    run, states = _run(_dag(dagbag, fast_retries=True), datetime(2025, 5, 2, tzinfo=UTC))

    assert run.state == "failed"
    assert run.get_task_instance("extract_activities").try_number == 1  # not retried
    assert "Strava token refresh failed at /oauth/token" in capfd.readouterr().out
    assert _count() == before


@pytest.mark.parametrize(
    ("fault", "retried", "message"),
    [
        ("http_401", False, "Strava rejected the access token after refresh: 401 Authorization Error"),
        ("http_429", True, "Strava rate limit exceeded: 429 Rate Limit Exceeded"),
        ("http_503", True, "Strava server error 503"),
        ("truncated", False, "Strava returned malformed JSON for page 1"),
    ],
)
def test_api_errors_name_the_cause_and_write_nothing(dagbag, token, standin, stack, capfd, fault, retried, message):
    standin.inject_fault("/api/v3/athlete/activities", fault, times=None)
    before_rows, before_objects = _count(), stack.list_keys("lifedata")

    run, states = _run(_dag(dagbag, fast_retries=True), datetime(2025, 5, 3, tzinfo=UTC))

    assert run.state == "failed"
    assert run.get_task_instance("extract_activities").try_number == (5 if retried else 1)
    out = capfd.readouterr().out
    assert message in out
    if fault == "http_429":
        assert "X-RateLimit-Usage 201,312 of X-RateLimit-Limit 200,2000" in out
    assert (_count(), stack.list_keys("lifedata")) == (before_rows, before_objects)


def test_rate_limit_then_success(dagbag, token, standin):
    standin.inject_fault("/api/v3/athlete/activities", "http_429", times=1)

    run, states = _run(_dag(dagbag, fast_retries=True), datetime(2025, 5, 4, tzinfo=UTC))

    assert run.state == "success", states
    assert run.get_task_instance("extract_activities").try_number == 2


def test_invalid_record_fails_the_load_naming_id_and_fields(dagbag, token, standin, capfd):
    standin.inject_fault("/api/v3/athlete/activities", "invalid_record", times=1)
    when = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    before = _count()

    run, states = _run(_dag(dagbag), when, {"full_history": True})

    assert run.state == "failed"
    assert states == {"extract_activities": "success", "load_activities": "failed"}
    out = capfd.readouterr().out
    assert "1 of " in out and "Strava activities are invalid, nothing was loaded" in out
    assert "distance: Input should be a valid number" in out and "start_date: Input should be a valid datetime" in out
    assert _count() == before


def test_secrets_never_reach_logs_xcoms_or_rendered_fields(dagbag, token, redis, standin, capfd):
    redis.set(TOKEN_KEY, json.dumps({**token, "expires_at": int(time.time()) - 60}))  # forces a refresh

    run, _ = _run(_dag(dagbag), datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1))

    assert run.state == "success"
    new = json.loads(redis.get(TOKEN_KEY))
    secrets = [TEST_STRAVA_SECRET, token["access_token"], token["refresh_token"], new["access_token"],
               new["refresh_token"]]
    out = capfd.readouterr().out
    from tests.e2e.test_exchange_rate_dags import _metadata_texts

    stored = _metadata_texts(DAG_ID)
    assert "stravaact/" in stored  # the search covers the XComs
    for secret in secrets:
        assert secret not in out
        assert secret not in stored


def test_strava_activity_types(dagbag, token):
    run, _ = _run(_dag(dagbag), datetime(2025, 5, 5, tzinfo=UTC))
    assert run.state == "success"
    types = dict(_warehouse().get_records(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'strava_activity'"))
    assert types["id"] == "bigint" and types["start_date"] == "timestamp with time zone"
    for column in ("distance", "moving_time", "average_speed", "max_speed", "average_cadence", "average_heartrate",
                   "weighted_average_watts", "kilojoules"):
        assert types[column] == "double precision", column
