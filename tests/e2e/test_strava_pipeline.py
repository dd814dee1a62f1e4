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

from devstack.standins.strava import activity, listed_activities, start_of, uploaded_at
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


def _fresh_warehouse() -> None:
    """No activity and no watermark: the next run is a first load."""
    _warehouse().run("DROP TABLE IF EXISTS strava_activity; DROP TABLE IF EXISTS strava_sync_state; "
                     "DROP TABLE IF EXISTS strava_activity_staged")


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _stored_ids() -> set[int]:
    return {row[0] for row in _warehouse().get_records("SELECT id FROM strava_activity")} if _table_exists() else set()


def _listed_before(now: datetime, before: datetime) -> list[dict]:
    """What Strava lists at `now` that started before `before` - from the stand-in's own model."""
    return [a for a in listed_activities(now) if a["start_date"] < before.strftime("%Y-%m-%dT%H:%M:%SZ")]


def test_bootstrap_exchanges_a_code_and_stores_the_token(redis, standin):
    result = _bootstrap("--code", "offline-authorization-code")

    assert result.returncode == 0, result.stderr
    stored = json.loads(redis.get(TOKEN_KEY))
    assert {"access_token", "refresh_token", "expires_at"} <= set(stored)
    assert stored["access_token"] not in result.stdout and stored["refresh_token"] not in result.stdout


def test_the_offline_stack_seeds_the_first_token_once_and_keeps_it(redis, standin):
    """make run OFFLINE=1 runs this at start: strava_data_pipeline is green with no manual step, and
    a restart keeps the token the pipeline has rotated since."""
    import os

    from devstack.stack import seed_offline_strava_token

    assert "Saved a Strava token to Redis key STRAVA_TOKEN" in seed_offline_strava_token(dict(os.environ))
    first = load_token(redis)
    assert first["refresh_token"]
    assert "already holds a Strava token: kept" in seed_offline_strava_token(dict(os.environ))
    assert load_token(redis) == first


def test_bootstrap_with_a_wrong_code_says_so(redis, standin):
    result = _bootstrap("--code", "not-the-code")

    assert result.returncode == 1
    assert "Strava refused the authorization code: 400" in result.stderr
    assert redis.get(TOKEN_KEY) is None


def test_first_load_reads_the_whole_history(dagbag, token, stack, standin):
    _fresh_warehouse()
    when = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    standin.configure(strava_now=_iso(when))

    run, states = _run(_dag(dagbag), when)  # no watermark yet: everything so far

    assert run.state == "success", states
    expected = _listed_before(when, when)
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
    extracted = run.get_task_instance("extract_activities").xcom_pull(task_ids="extract_activities")
    assert extracted == {"raw_key": raw_key, "after": 0, "before": int(when.timestamp())}
    assert _warehouse().get_first("SELECT synced_until FROM strava_sync_state")[0] == when


def test_an_activity_uploaded_hours_after_its_start_hour_is_loaded(dagbag, token, standin):
    """Strava lists an activity once it is uploaded, and filters by start time: the run for the
    hour it started in cannot see it. A later run must still load it - the old pipeline, which
    asked each hour for the activities started in that hour, never did."""
    late = activity(394)  # started 2025-05-24 04:53 UTC, uploaded 12:24 - 7.5 hours later
    start_hour_end = start_of(394).replace(minute=0, second=0) + timedelta(hours=1)
    after_upload = uploaded_at(394).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    assert after_upload - start_hour_end > timedelta(hours=6)
    _fresh_warehouse()
    standin.configure(strava_now=_iso(start_hour_end))
    run, states = _run(_dag(dagbag), start_hour_end)  # the run of its start hour: not uploaded yet
    assert run.state == "success", states
    assert late["id"] not in _stored_ids()

    for hour in range(1, 9):  # the hourly runs while the watch has not synced, then the one after
        end = start_hour_end + timedelta(hours=hour)
        standin.configure(strava_now=_iso(end))
        run, states = _run(_dag(dagbag), end)
        assert run.state == "success", states
        assert (late["id"] in _stored_ids()) == (end >= after_upload), end

    row = _warehouse().get_first("SELECT name, start_date FROM strava_activity WHERE id = %s", [late["id"]])
    assert row == (late["name"], start_of(394).replace(second=0))


def test_days_late_uploads_and_a_pause_are_caught_up_from_the_watermark(dagbag, token, standin):
    """A watch that syncs three days later, while the pipeline was paused for two days: the first
    run after the pause reads from a week before the last successful load."""
    late = activity(399)  # started 2025-05-30 15:34, uploaded 2025-06-03 06:58
    _fresh_warehouse()
    before_start = start_of(399).replace(minute=0, second=0)
    standin.configure(strava_now=_iso(before_start))
    assert _run(_dag(dagbag), before_start)[0].state == "success"
    standin.forget_requests()

    resumed = uploaded_at(399).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)  # no run in between
    standin.configure(strava_now=_iso(resumed))
    run, states = _run(_dag(dagbag), resumed)

    assert run.state == "success", states
    assert late["id"] in _stored_ids()
    (call,) = [r["query"] for r in standin.requests_seen() if r["path"] == "/api/v3/athlete/activities"]
    assert call["after"] == str(int((before_start - timedelta(days=7)).timestamp()))
    assert call["before"] == str(int(resumed.timestamp()))
    assert (call["page"], call["per_page"]) == ("1", "200")  # one short page: no read spent on an empty one


def test_rerun_is_idempotent_and_later_edits_and_deletions_reach_the_warehouse(dagbag, token, standin, stack):
    when = datetime(2025, 6, 11, 15, tzinfo=UTC)
    _fresh_warehouse()
    standin.configure(strava_now=_iso(when))
    dag = _dag(dagbag)
    _run(dag, when)
    first = _count()
    rerun, _ = _run(dag, when)
    assert rerun.state == "success" and _count() == first

    edited, gone = activity(405), activity(406)  # both within the last week before `when`
    assert when - timedelta(days=7) < start_of(405) and uploaded_at(406) < when
    later = when + timedelta(hours=1)
    standin.configure(strava_now=_iso(later),
                      strava_activity_overrides={str(edited["id"]): {"name": "Renamed ✨ run", "distance": 12345.6}},
                      strava_deleted_ids=[gone["id"]])
    run, states = _run(dag, later)

    assert run.state == "success", states
    assert _warehouse().get_first("SELECT name, distance FROM strava_activity WHERE id = %s", [edited["id"]]) == \
        ("Renamed ✨ run", 12345.6)
    assert gone["id"] not in _stored_ids()
    assert run.get_task_instance("publish").xcom_pull(task_ids="publish")["deleted"] == 1


def test_the_daily_run_reads_the_whole_history_so_old_edits_arrive(dagbag, token, standin):
    when = datetime(2025, 6, 20, 15, tzinfo=UTC)
    _fresh_warehouse()
    standin.configure(strava_now=_iso(when))
    _run(_dag(dagbag), when)
    old = activity(11)  # from January 2024: outside any week's look-back
    standin.configure(strava_activity_overrides={str(old["id"]): {"name": "Renamed a year later"}})
    standin.forget_requests()

    hourly, _ = _run(_dag(dagbag), when + timedelta(hours=1))
    assert _warehouse().get_first("SELECT name FROM strava_activity WHERE id = %s", [old["id"]])[0] == old["name"]
    midnight = datetime(2025, 6, 21, 0, tzinfo=UTC)
    daily, states = _run(_dag(dagbag), midnight)  # the run whose interval ends at 00:00 UTC

    assert hourly.state == daily.state == "success", states
    assert _warehouse().get_first("SELECT name FROM strava_activity WHERE id = %s", [old["id"]])[0] == \
        "Renamed a year later"
    afters = [r["query"]["after"] for r in standin.requests_seen() if r["path"] == "/api/v3/athlete/activities"]
    assert afters[0] != "0" and afters[-1] == "0"


def test_read_rate_limit_waits_for_the_next_15_minute_window(dagbag, token, standin, stack, capfd):
    """developers.strava.com/docs/rate-limits: 100 reads / 15 min per application by default.
    Here the limit is 1: the second page gets a 429, retried - never a half load."""
    _fresh_warehouse()
    standin.configure(strava_read_limit="1,1000")
    when = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

    run, states = _run(_dag(dagbag, fast_retries=True), when)

    assert run.state == "failed"
    assert run.get_task_instance("extract_activities").try_number == 5
    out = capfd.readouterr().out
    assert "Strava rate limit exceeded: 429 Rate Limit Exceeded" in out and "of 1,1000 (15 min, day)" in out
    assert "the 15-minute window resets at" in out
    assert _count() == 0


def test_rate_limit_retry_waits_until_the_window_resets():
    from types import SimpleNamespace

    from include.strava import StravaRejected, StravaRetryable, _rate_limit_failure

    quarter = SimpleNamespace(headers={"X-ReadRateLimit-Usage": "101,312", "X-ReadRateLimit-Limit": "100,1000"})
    failure = _rate_limit_failure(quarter, "Rate Limit Exceeded")
    assert isinstance(failure, StravaRetryable)
    assert timedelta(seconds=5) <= failure.retry_after <= timedelta(minutes=15, seconds=5)
    assert StravaRetryPolicy().evaluate(failure, 1, 5).retry_delay == failure.retry_after
    daily = SimpleNamespace(headers={"X-ReadRateLimit-Usage": "3,1001", "X-ReadRateLimit-Limit": "100,1000"})
    assert isinstance(_rate_limit_failure(daily, "Rate Limit Exceeded"), StravaRejected)  # not 24 h of retries


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
    assert "make strava-token OFFLINE=1 CODE=offline-authorization-code" in out  # the offline way, too


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
        ("http_401", False, "Strava rejected the access token after a refresh: 401 Authorization Error"),
        ("http_429", True, "Strava rate limit exceeded: 429 Rate Limit Exceeded"),
        ("http_503", True, "Strava server error 503"),
        ("truncated", True, "Strava's answer for page 1 broke off: a JSON document cut short"),
        ("not_json", False, "Strava returned malformed JSON for page 1"),
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
        assert "reads used 101,312 of 100,1000 (15 min, day)" in out
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

    run, states = _run(_dag(dagbag), when)

    assert run.state == "failed"
    assert states == {"extract_activities": "success", "load_activities": "failed", "check_columns": "upstream_failed",
                      "check_table": "upstream_failed", "publish": "upstream_failed"}
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


def test_the_dag_stays_green_after_the_standins_restart(dagbag, token, standin):
    """`make run OFFLINE=1`, Ctrl-C, `make run OFFLINE=1`: Redis keeps the token, and the stand-in
    (like Strava) still knows the tokens it issued - its state folder survives the restart."""
    from tests.conftest import _STACK

    (server,) = [s for s in _STACK["services"] if s.name == "api-standins"]
    when = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    server.stop()
    server.start()
    standin.clear_faults()  # the restarted server starts with default settings: the tests' again

    run, states = _run(_dag(dagbag), when)

    assert run.state == "success", states
    assert run.get_task_instance("extract_activities").try_number == 1


def test_a_trigger_without_logical_date_reads_up_to_when_it_was_triggered(dagbag, token, standin):
    """`airflow dags trigger strava_data_pipeline` (no --logical-date): no data interval; the run
    reads up to its run_after instead of failing."""
    standin.forget_requests()

    run, states = _run(_dag(dagbag), None)

    assert run.state == "success", states
    (call, *_) = [r["query"] for r in standin.requests_seen() if r["path"] == "/api/v3/athlete/activities"]
    assert abs(int(call["before"]) - run.run_after.timestamp()) < 1


# -- asset events and the data-quality gate ----------------------------------------------------------


def _events(run) -> dict[str, list[dict]]:
    from tests.e2e.asset_events import events_by_asset

    return events_by_asset(run)


def test_a_load_emits_the_raw_object_and_table_events_with_their_extra(dagbag, token, standin):
    _fresh_warehouse()
    when = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    standin.configure(strava_now=_iso(when))

    run, states = _run(_dag(dagbag), when)

    assert run.state == "success", states
    listed = len(_listed_before(when, when))
    window = {"window_after": "1970-01-01T00:00:00+00:00", "window_before": when.isoformat()}
    raw_key = f"stravaact/{when.strftime('%Y%m%dT%H%M%S')}.json"
    assert _events(run) == {
        "lifedata.stravaact": [{"key": raw_key, "activities": listed, **window}],
        "warehouse.strava_activity": [{"raw_key": raw_key, "rows": listed, "upserted": listed, "deleted": 0,
                                       **window}],
    }


def test_an_impossible_value_fails_the_check_and_never_reaches_the_table(dagbag, token, standin, capfd):
    """A negative distance passes validation (a float) and the stage (no CHECK) - Strava itself
    never reports one: a synthetic impossible value, served through the stand-in's edit setting,
    proving the gate. The run fails naming the column, the figure and the staged rows; the table
    keeps the activity as it was (readers never see the bad value) and the table's event is not
    emitted (the raw object's is: it was written)."""
    when = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    standin.configure(strava_now=_iso(when))
    victim = _listed_before(when, when)[-1]
    assert _run(_dag(dagbag), when - timedelta(hours=1))[0].state == "success"  # the victim is in the table
    distance = "SELECT distance FROM strava_activity WHERE id = %s"
    assert _warehouse().get_records(distance, [victim["id"]]) == [(victim["distance"],)]
    standin.configure(strava_activity_overrides={str(victim["id"]): {"distance": -1234.5}})

    run, states = _run(_dag(dagbag), when)

    assert run.state == "failed"
    assert states["load_activities"] == "success" and states["check_columns"] == "failed", states
    assert states["check_table"] == "success" and states["publish"] == "upstream_failed", states
    out = capfd.readouterr().out
    assert "Column: distance" in out and "'geq_to': 0, 'result': -1234.5" in out
    raw_key = f"stravaact/{when.strftime('%Y%m%dT%H%M%S')}.json"
    assert f"Data-quality checks failed on strava_activity_staged where raw_key = '{raw_key}'. Those rows stay " \
           "in strava_activity_staged for inspection; strava_activity was not changed" in out
    assert set(_events(run)) == {"lifedata.stravaact"}
    # Readers of the table never see the impossible value; it waits in the stage, inspectable.
    assert _warehouse().get_records(distance, [victim["id"]]) == [(victim["distance"],)]
    assert _warehouse().get_records("SELECT distance FROM strava_activity_staged WHERE raw_key = %s AND id = %s",
                                    [raw_key, victim["id"]]) == [(-1234.5,)]
    # Once the activity is right again, a re-run stages it anew, passes, publishes and clears the stage.
    standin.configure(strava_activity_overrides={})
    rerun, states = _run(_dag(dagbag), when)
    assert rerun.state == "success", states
    assert set(_events(rerun)) == {"lifedata.stravaact", "warehouse.strava_activity"}
    assert _warehouse().get_records(distance, [victim["id"]]) == [(victim["distance"],)]
    assert _warehouse().get_first("SELECT count(*) FROM strava_activity_staged WHERE raw_key = %s",
                                  [raw_key])[0] == 0
