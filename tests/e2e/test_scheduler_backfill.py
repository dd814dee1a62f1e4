"""The real scheduler path: Airflow's api-server, scheduler, dag-processor and triggerer run on the
test stack (as `make run` runs them): `airflow backfill create` fills January 2025 for
backfilling_dataset_gathering (the runs' data intervals and what landed in S3), and a TLC month not
published yet waits deferred in the triggerer, then loads (nyc_taxi_ingestion on its default source)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time

import pytest

DAG_ID = "backfilling_dataset_gathering"
WEEKS = [("20250101", "20250107"), ("20250108", "20250114"), ("20250115", "20250121"),
         ("20250122", "20250128"), ("20250129", "20250204")]


def _sql(query: str, **params) -> list[tuple]:
    from airflow.settings import Session
    from sqlalchemy import text

    with Session() as session:
        return list(session.execute(text(query), params))


def _airflow_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=dict(os.environ), capture_output=True,
                          text=True, timeout=120)


def _wait(predicate, timeout: float, what: str, describe=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; state: {describe()}")


@pytest.fixture(scope="module")
def airflow_components(stack):
    from devstack.stack import airflow_components, stop_all

    started = []
    try:
        # No scheduled ingestion month (only the run a test triggers); the publication trigger looks every 2 s.
        env = {**os.environ, "NYC_TAXI_END_MONTH": "2020-12", "NYC_TAXI_PUBLICATION_FIRST_POLL_SECONDS": "2"}
        for component in airflow_components(stack.cfg, env):
            component.start()
            started.append(component)
        yield started
    finally:
        _airflow_cli("dags", "pause", "nyc_taxi_ingestion")
        stop_all(started)


def _backfill_runs() -> list[tuple]:
    return _sql(
        "SELECT logical_date, data_interval_start, data_interval_end, state FROM dag_run "
        "WHERE dag_id = :d AND run_type = 'backfill' ORDER BY logical_date", d=DAG_ID)


def test_backfill_create_fills_january_once_through_the_scheduler(airflow_components, standin, stack):
    stack.empty_bucket("weather-data")
    _wait(lambda: _sql("SELECT 1 FROM dag WHERE dag_id = :d", d=DAG_ID), 90, "the dag-processor to parse the DAG")

    result = _airflow_cli("backfill", "create", "--dag-id", DAG_ID, "--from-date", "2025-01-01",
                          "--to-date", "2025-01-31")
    assert result.returncode == 0, result.stdout + result.stderr
    # Runs of a paused DAG - backfills included - never start; unpausing after the backfill exists
    # leaves catch-up nothing to add (the backfill holds every January logical date).
    assert _airflow_cli("dags", "unpause", DAG_ID).returncode == 0

    def finished():
        runs = _backfill_runs()
        if len(runs) == 5 and all(state in ("success", "failed") for *_, state in runs):
            return runs
        return None

    runs = _wait(finished, 240, "5 backfill runs to finish", lambda: (
        _backfill_runs(), _sql("SELECT task_id, state, try_number FROM task_instance WHERE dag_id = :d", d=DAG_ID),
        _sql("SELECT is_paused FROM dag WHERE dag_id = :d", d=DAG_ID)))
    assert [state for *_, state in runs] == ["success"] * 5, runs
    # One run per week start; each gathers the 7 days from its logical date, so the weeks touch
    # and never overlap (checked on the CSVs below).
    assert [r[0].date().isoformat() for r in runs] == ["2025-01-01", "2025-01-08", "2025-01-15", "2025-01-22",
                                                       "2025-01-29"]
    keys = sorted(stack.list_keys("weather-data", "daily_temperature_range/"))
    assert keys == [f"daily_temperature_range/{a}_{b}.csv" for a, b in WEEKS]
    days = []
    for key in keys:
        rows = list(csv.DictReader(io.StringIO(stack.get_object("weather-data", key).decode())))
        assert all(float(r["temperature_min"]) < float(r["temperature_max"]) for r in rows)
        days += [r["date"] for r in rows]
    assert len(days) == len(set(days)) == 35  # no date twice
    assert {f"2025-01-{d:02d}" for d in range(1, 32)} <= set(days)  # no January date missing

    # Backfilling a week again replaces its object with the same content: nothing added.
    def backfills_completed() -> int:
        return _sql("SELECT count(*) FROM backfill WHERE dag_id = :d AND completed_at IS NOT NULL", d=DAG_ID)[0][0]

    _wait(lambda: backfills_completed() == 1, 60, "the scheduler to mark the backfill completed")
    before = stack.list_keys("weather-data", "daily_temperature_range/")
    result = _airflow_cli("backfill", "create", "--dag-id", DAG_ID, "--from-date", "2025-01-08",
                          "--to-date", "2025-01-08", "--reprocess-behavior", "completed")
    assert result.returncode == 0, result.stdout + result.stderr
    _wait(lambda: backfills_completed() == 2, 180, "the second backfill to complete", _backfill_runs)
    assert all(state == "success" for *_, state in _backfill_runs())
    assert stack.list_keys("weather-data", "daily_temperature_range/") == before


def _make_dag_env(stack) -> dict[str, str]:
    """`make dag` pointed at the test stack, as if it were `make run`'s: same ports, same state."""
    cfg = stack.cfg
    return {**os.environ, "DEVSTACK_STATE_DIR": str(cfg.state_dir), "DEVSTACK_API_PORT": str(cfg.api_port),
            "DEVSTACK_POSTGRES_PORT": str(cfg.postgres_port), "DEVSTACK_REDIS_PORT": str(cfg.redis_port),
            "DEVSTACK_S3_PORT": str(cfg.s3_port), "DEVSTACK_STANDIN_PORT": str(cfg.standin_port)}


def test_make_dag_triggers_through_a_running_scheduler_and_prints_task_states(airflow_components, standin, stack):
    dag_id = "dependencies_demo"
    _wait(lambda: _sql("SELECT 1 FROM dag WHERE dag_id = :d", d=dag_id), 90, "the dag-processor to parse the DAG")
    assert _airflow_cli("dags", "unpause", dag_id).returncode == 0
    runs_before = _sql("SELECT count(*) FROM dag_run WHERE dag_id = :d", d=dag_id)[0][0]

    result = subprocess.run([sys.executable, "-m", "devstack.run_dag", dag_id], env=_make_dag_env(stack),
                            capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "triggering through its scheduler" in result.stdout
    summary = result.stdout.split(f"\nDAG {dag_id}  run ", 1)[1]
    assert "state success" in summary.splitlines()[0]
    for task_id in ("task_a", "task_b", "task_c", "task_d", "task_e"):
        assert any(line.split()[:2] == [task_id, "success"] for line in summary.splitlines()), summary
    runs = _sql("SELECT state, triggered_by FROM dag_run WHERE dag_id = :d AND triggering_user_name = 'make dag'",
                d=dag_id)
    assert runs == [("success", "CLI")]
    # One run, executed by the scheduler: no second, in-process (dag.test) run next to it.
    assert _sql("SELECT count(*) FROM dag_run WHERE dag_id = :d", d=dag_id)[0][0] == runs_before + 1


def test_make_dag_refuses_a_paused_dag_with_the_way_out(airflow_components, stack):
    dag_id = "xcoms_demo"
    _wait(lambda: _sql("SELECT 1 FROM dag WHERE dag_id = :d", d=dag_id), 90, "the dag-processor to parse the DAG")
    assert _airflow_cli("dags", "pause", dag_id).returncode == 0

    result = subprocess.run([sys.executable, "-m", "devstack.run_dag", dag_id], env=_make_dag_env(stack),
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 2
    assert f"`{dag_id}` is paused" in result.stderr and f"dags unpause {dag_id}" in result.stderr
    assert _sql("SELECT count(*) FROM dag_run WHERE dag_id = :d AND triggering_user_name = 'make dag'",
                d=dag_id) == [(0,)]


def test_make_dag_names_a_dag_the_stack_does_not_know(airflow_components, stack):
    result = subprocess.run([sys.executable, "-m", "devstack.run_dag", "no_such_dag"], env=_make_dag_env(stack),
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 2
    assert "has not registered a DAG `no_such_dag`" in result.stderr


def test_make_dag_date_gives_the_interval_dag_test_gives(airflow_components, standin, stack, dagbag):
    """DATE means the same data interval in both modes: Airflow infers a triggered run's interval
    from run_after, dag.test() from the logical date - make dag passes the date as both."""
    from datetime import UTC, datetime

    from airflow.serialization.encoders import coerce_to_core_timetable

    assert _airflow_cli("dags", "unpause", DAG_ID).returncode == 0

    # A date the backfill above holds no run for (one run per logical date); CONF picks the week,
    # as the trigger form's `week_start` does.
    result = subprocess.run([sys.executable, "-m", "devstack.run_dag", DAG_ID, "--date", "2025-01-20",
                             "--conf", '{"week_start": "2025-01-15"}'],
                            env=_make_dag_env(stack), capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stdout + result.stderr
    (start, end, conf), = _sql("SELECT data_interval_start, data_interval_end, conf FROM dag_run WHERE dag_id = :d "
                               "AND triggering_user_name = 'make dag'", d=DAG_ID)
    timetable = coerce_to_core_timetable(dagbag.get_dag(DAG_ID).timetable)
    expected = timetable.infer_manual_data_interval(run_after=datetime(2025, 1, 20, tzinfo=UTC))
    assert (start, end) == (expected.start, expected.end)
    assert end <= datetime(2025, 1, 20, tzinfo=UTC)  # not an interval around today
    assert conf == {"week_start": "2025-01-15"}


def test_an_unpublished_month_waits_deferred_in_the_triggerer_then_loads(airflow_components, standin, stack):
    """Last month (never published yet: the TLC takes about two months): the run's wait_for_publication is
    `deferred` - no worker slot, its trigger polling in the triggerer - while download has not started;
    once the stand-in's clock publishes the file, the trigger fires and the month loads."""
    import json
    from datetime import UTC, datetime, timedelta

    from devstack.standins.tlc_publisher import publication_time
    from include.tlc_publication import head

    now = datetime.now(UTC)
    month = f"{now.year - (now.month == 1):04d}-{(now.month - 2) % 12 + 1:02d}"
    standin.configure(tlc_rows_per_month=2000, tlc_now=now.isoformat())
    assert head(f"{standin.standin_url}/trip-data/yellow_tripdata_{month}.parquet")[0] == 403

    def parsed() -> bool:  # by this stack's dag-processor, with no scheduled month
        rows = _sql("SELECT timetable_description FROM dag WHERE dag_id = 'nyc_taxi_ingestion'")
        return bool(rows) and "to 2020-12" in (rows[0][0] or "")

    _wait(parsed, 120, "the dag-processor to parse nyc_taxi_ingestion")
    assert _airflow_cli("dags", "unpause", "nyc_taxi_ingestion").returncode == 0
    result = _airflow_cli("dags", "trigger", "nyc_taxi_ingestion", "--conf", json.dumps({"month": month}))
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = _wait(lambda: _sql("SELECT run_id FROM dag_run WHERE dag_id = 'nyc_taxi_ingestion' AND conf::text "
                                "LIKE :m ORDER BY id DESC LIMIT 1", m=f'%"{month}"%'), 60, "the run")[0][0]

    def states() -> dict:
        return dict(_sql("SELECT task_id, state FROM task_instance WHERE dag_id = 'nyc_taxi_ingestion' "
                         "AND run_id = :r", r=run_id))

    _wait(lambda: states().get("wait_for_publication") == "deferred", 180, "wait_for_publication to defer", states)
    triggers = _sql("SELECT t.classpath FROM trigger t JOIN task_instance ti ON ti.trigger_id = t.id "
                    "WHERE ti.run_id = :r AND ti.task_id = 'wait_for_publication'", r=run_id)
    assert triggers == [("include.tlc_publication.TlcFilePublishedTrigger",)]
    assert states().get("download") in (None, "none"), states()

    standin.configure(tlc_now=(publication_time(month) + timedelta(hours=1)).isoformat())

    _wait(lambda: _sql("SELECT state FROM dag_run WHERE run_id = :r AND state IN ('success', 'failed')",
                       r=run_id), 300, "the run to finish once the file is published", states)
    assert states()["publish"] == "success", states()
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    rows = PostgresHook(postgres_conn_id="warehouse_db").get_first(
        "SELECT count(*) FROM yellow_taxi_trips WHERE data_month = %s", [f"{month}-01"])[0]
    assert rows >= 2000
