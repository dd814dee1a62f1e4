"""Every pipeline on the CeleryExecutor with two workers, as `make run EXECUTOR=celery` runs them, and
the same batch on the LocalExecutor (`make run`): the same rows and objects land either way.

The batch covers every pipeline: the three weather DAGs (Open-Meteo, S3 and local CSV), the three
exchange-rate DAGs (TwelveData, one in a virtualenv, S3 and Postgres), Strava (OAuth token in Redis,
S3, Postgres), NYC taxi months (download, parquet, bulk load) and the course DAGs (check_dag's file,
XCom, dependencies). Every run is triggered through the stack's own scheduler with a fixed logical
date, so both stacks produce the same outputs. Not in it: backfilling_dataset_gathering - the same
Open-Meteo -> S3 path as weather_data_s3 - because unpausing it (which a triggered run needs) starts
its catch-up of every week since 2022, which would swamp the batch and make its outputs depend on
timing. The NYC catch-up (course mirror) is cut to one month, 2021-01, for the same reason.

On Celery the workers are separate processes with their own address (hostname label), working and
temp dirs: task instances must have run on both, check_dag's three tasks (which share a local file)
on the one worker of the `local-files` queue, and the virtualenv task on the `venv` queue's. A worker
SIGKILLed in the middle of a task: the task is retried and the month still lands exactly.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from devstack.livestack import LiveStack

MONTH, ROWS = "2021-02", 20_000
TLC_PATH = "/DataTalksClub/nyc-tlc-data/releases/download/yellow/"  # the stand-in's, as the real mirror's
FX_AT = "2025-03-10T12:34:00+00:00"  # a Monday, market open
FX_STAMP = "20250310T123400"
STRAVA_NOW, STRAVA_AT = "2025-06-02T12:00:00Z", "2025-06-02T11:00:00+00:00"
BATCH = [  # (dag_id, logical date, conf)
    ("xcoms_demo", "2025-02-01T00:00:00+00:00", None),
    ("dependencies_demo", "2025-02-01T00:00:00+00:00", None),
    ("dependencies_chain_demo", "2025-02-01T00:00:00+00:00", None),
    ("check_dag", "2025-02-01T00:00:00+00:00", None),
    ("weather_data_s3", "2025-06-01T00:00:00+00:00", None),
    ("weather_data_classes_api", "2025-06-01T00:00:00+00:00", None),
    ("weather_data_taskflow_api", "2025-06-01T00:00:00+00:00", None),
    ("scheduling_dataset_gathering", FX_AT, None),
    ("scheduling_with_venvs", FX_AT, None),
    ("connections_and_variables", FX_AT, None),
    # full_history: unpausing the DAG also starts its latest scheduled run, which may finish first and move
    # the watermark - the batch's run would then read only its last week, and the raw object differ by stack.
    ("strava_data_pipeline", STRAVA_AT, {"full_history": True}),
    ("nyc_taxi_ingestion", "2021-03-02T06:00:00+00:00", {"month": MONTH}),
]
class BatchStack(LiveStack):
    def __init__(self, tmp: Path, executor: str):
        self.shared = tmp / "check-dag"  # check_dag's base folder, per stack
        super().__init__(tmp, {
            "DEVSTACK_EXECUTOR": executor, "DEVSTACK_WORKERS": "2",
            "AIRFLOW_VAR_CHECK_DAG_DIR": str(self.shared),
            # A SIGKILLed worker's task is noticed after this many seconds (300 by default) and retried.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "40",
        })
        self.use_course_mirror("2021-01", "2021-01")  # unpausing the DAG catches up this one month besides MONTH

    def run_batch(self, batch=BATCH) -> None:
        dag_ids = {dag_id for dag_id, _, _ in batch}
        self.wait_for(lambda: len(self.sql("SELECT dag_id FROM dag WHERE dag_id IN ("
                                           + ",".join(f"'{d}'" for d in dag_ids) + ")")) == len(dag_ids),
                      180, "every DAG of the batch to be parsed")
        self.standin("config", {"tlc_rows_per_month": ROWS, "strava_now": STRAVA_NOW,
                                "twelvedata_credits_per_minute": 10_000})
        result = self.exec("python", "-m", "include.strava_token", "--code", "offline-authorization-code")
        assert result.returncode == 0, result.stderr[-2000:]
        result = self.trigger(batch)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    def wait_for_batch(self, timeout: float = 900) -> list[tuple]:
        batch_runs = "run_type = 'manual'"

        def finished():
            runs = self.sql(f"SELECT dag_id, run_id, state FROM dag_run WHERE {batch_runs}")
            done = [run for run in runs if run[2] in ("success", "failed")]
            return runs if len(done) == len(BATCH) == len(runs) else None

        runs = self.wait_for(finished, timeout, "every run of the batch to finish")
        failed = [run for run in runs if run[2] != "success"]
        assert not failed, (failed, self.sql("SELECT dag_id, task_id, state, try_number, hostname FROM task_instance "
                                             "WHERE state <> 'success'"))
        return runs

    def outputs(self) -> dict:
        """What landed: every object (key -> md5) of the project's buckets, every warehouse table's rows
        (without load times), every local CSV - restricted to the batch's own dates where a scheduled
        run of now could add more (exchange rates)."""
        import boto3

        conn = self.cfg.connections()["aws_default"]
        client = boto3.client("s3", endpoint_url=self.cfg.s3_url, region_name="us-east-1",
                              aws_access_key_id=conn["login"], aws_secret_access_key=conn["password"])
        objects = {}
        for bucket in ("weather-data", "market-data", "lifedata", "nyc-tlc"):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in page.get("Contents", []):
                    if bucket == "market-data" and FX_STAMP not in obj["Key"]:
                        continue
                    if bucket == "lifedata" and "20250602T110000" not in obj["Key"]:
                        continue
                    objects[f"{bucket}/{obj['Key']}"] = obj["ETag"]
        tables = {}
        for table, where in (("exchange_rates", f"rate_at = '{FX_AT}'"), ("strava_activity", "true"),
                             ("yellow_taxi_trips", "true")):
            row = ("(to_jsonb(t) - 'loaded_at')::text")
            tables[table] = self.warehouse(f"SELECT count(*), md5(string_agg({row}, '|' ORDER BY {row})) "  # noqa: S608
                                           f"FROM {table} t WHERE {where}")[0]
        weather_dir = self.cfg.state_dir / "data" / "weather"
        files = {str(path.relative_to(weather_dir)): path.read_bytes() for path in sorted(weather_dir.rglob("*.csv"))}
        return {"objects": objects, "tables": tables, "local csv": files,
                "check_dag": sorted(str(p.relative_to(self.shared)) for p in self.shared.rglob("dummy")
                                    if "20250201" in str(p))}


@pytest.fixture(scope="module")
def local_outputs(tmp_path_factory, stack):
    """The batch on the LocalExecutor: what make run lands."""
    local = BatchStack(tmp_path_factory.mktemp("local"), "local")
    try:
        local.start()
        local.run_batch()
        local.wait_for_batch()
        return local.outputs()
    finally:
        local.stop()


@pytest.fixture(scope="module")
def celery(tmp_path_factory, stack):
    celery = BatchStack(tmp_path_factory.mktemp("celery"), "celery")
    try:
        celery.start()
        celery.run_batch()
        celery.wait_for_batch()
        yield celery
    finally:
        celery.stop()


def test_every_pipeline_succeeds_on_two_celery_workers_and_uses_both(celery):
    hosts = dict(celery.sql("SELECT hostname, count(*) FROM task_instance WHERE state = 'success' GROUP BY 1"))

    assert set(hosts) == {"127.0.0.2", "127.0.0.3"}, hosts  # worker-1 and worker-2, no one else


def test_tasks_that_share_local_files_run_on_the_one_worker_of_their_queue(celery):
    placed = celery.sql("SELECT dag_id, task_id, queue, hostname FROM task_instance WHERE state = 'success' "
                        "AND (dag_id = 'check_dag' OR task_id IN ('load_csv_file', 'extract_exchange_rate') "
                        "AND dag_id <> 'connections_and_variables')")

    check_dag = {(queue, host) for dag_id, _, queue, host in placed if dag_id == "check_dag"}
    assert check_dag == {("local-files", "127.0.0.2")}, placed
    venv = {(queue, host) for dag_id, task, queue, host in placed if dag_id == "scheduling_with_venvs"}
    assert venv == {("venv", "127.0.0.2")}, placed
    csv = {(queue, host) for dag_id, task, queue, host in placed if task == "load_csv_file"}
    assert csv == {("local-files", "127.0.0.2")}, placed


def test_what_lands_is_identical_to_a_local_executor_run(celery, local_outputs):
    outputs = celery.outputs()

    assert outputs["tables"]["yellow_taxi_trips"][0] == 2 * ROWS  # MONTH and the catch-up's 2021-01
    assert outputs["tables"]["exchange_rates"][0] == 1
    assert len(outputs["check_dag"]) == 1 and len(outputs["local csv"]) == 2
    for part in ("objects", "tables", "local csv", "check_dag"):
        assert outputs[part] == local_outputs[part], part


def test_a_worker_killed_mid_task_has_its_task_retried_and_nothing_lost(celery):
    celery.standin("faults", {"path": TLC_PATH, "kind": "slow_15", "times": 1})
    celery.trigger([("nyc_taxi_ingestion", "2021-04-02T06:00:00+00:00", {"month": "2021-03"})])
    (host, try_number), = celery.wait_for(
        lambda: celery.sql("SELECT hostname, try_number FROM task_instance WHERE dag_id = 'nyc_taxi_ingestion' "
                           "AND task_id = 'download' AND state = 'running' AND run_id LIKE '%2021-04-02%'"),
        120, "the download to run")
    worker = {"127.0.0.2": "airflow-worker-1", "127.0.0.3": "airflow-worker-2"}[host]
    since = len(celery.supervisor_log())

    os.kill(celery.pid_of(worker), signal.SIGKILL)

    def run_state():
        rows = celery.sql("SELECT state FROM dag_run WHERE dag_id = 'nyc_taxi_ingestion' "
                          "AND run_id LIKE '%2021-04-02%'")
        return rows[0][0] if rows and rows[0][0] in ("success", "failed") else None

    assert celery.wait_for(run_state, 600, "the run after the kill") == "success"
    tries = celery.sql("SELECT try_number, hostname, state FROM task_instance WHERE dag_id = 'nyc_taxi_ingestion' "
                       "AND task_id = 'download' AND run_id LIKE '%2021-04-02%'")
    assert tries[0][0] > try_number, tries  # retried, not left running
    assert f"{worker} was killed by SIGKILL" in celery.supervisor_log()[since:]
    count = celery.warehouse("SELECT count(*) FROM yellow_taxi_trips WHERE data_month = '2021-03-01'")[0][0]
    assert count == ROWS
