"""`make run` survives faults like a supervised deployment: the real `python -m devstack run --offline`
(state folder and ports of its own) catches up NYC taxi months through its scheduler while each
server and the scheduler are killed (SIGKILL) or paused (SIGSTOP) during running tasks. Each fault
is answered by a logged restart (or, for a short pause, by none); afterwards every run has
succeeded and every month in the warehouse has exactly the rows of its raw file in S3. Ctrl-C
then stops everything, leaving no process behind.

The tests of this module share one stack and run in file order; each first makes sure a task is
running (downloads are slowed by the stand-in's `slow_<s>` fault so one always is).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import signal
import time
from pathlib import Path

import pytest

from devstack.livestack import LiveStack, all_processes, cmdline, descendants, parent, quietly, tcp_listeners

LAST_MONTH = "2021-03"
MONTHS = ["2021-01", "2021-02", "2021-03"]
ROWS_PER_MONTH = 20_000
SLOW_DOWNLOAD = "slow_12"
TLC_PATH = "/DataTalksClub/nyc-tlc-data/releases/download/yellow/"  # the stand-in's, as the real mirror's
DAG_ID = "nyc_taxi_ingestion"
pytestmark = pytest.mark.usefixtures("stack")  # a missing server install fails with its message


class SupervisedStack(LiveStack):
    def __init__(self, tmp: Path):
        super().__init__(tmp, {
            # A killed scheduler takes its task processes with it: Airflow notices their silence after
            # this many seconds (300 by default) and retries them.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "40",
        })
        self.use_course_mirror(MONTHS[0], LAST_MONTH)

    def slow_downloads(self) -> None:
        self.standin("config", {"tlc_rows_per_month": ROWS_PER_MONTH})
        self.standin("faults", {"path": TLC_PATH, "kind": SLOW_DOWNLOAD, "times": None})

    def running_tasks(self) -> list[tuple]:
        with contextlib.suppress(Exception):  # the metadata DB may be down right now
            return self.sql(f"SELECT run_id, task_id, try_number FROM task_instance WHERE dag_id = '{DAG_ID}' "
                            "AND state = 'running'")
        return []

    def ensure_a_task_is_running(self) -> list[tuple]:
        """A running task to be hit by the next fault: the catch-up's, or a manual run's."""
        if not self.running_tasks():
            unfinished = self.sql(f"SELECT count(*) FROM dag_run WHERE dag_id = '{DAG_ID}' "
                                  "AND state IN ('queued', 'running')")[0][0]
            if not unfinished:
                self.airflow("dags", "trigger", DAG_ID, "--conf", json.dumps({"month": MONTHS[0]}))
        return self.wait_for(self.running_tasks, 120, "a running nyc_taxi_ingestion task")


@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    stack = SupervisedStack(tmp_path_factory.mktemp("supervised"))
    try:
        stack.start()
        stack.slow_downloads()
        stack.wait_for(lambda: stack.sql(f"SELECT 1 FROM dag WHERE dag_id = '{DAG_ID}'"), 120, "the DAG to be parsed")
        stack.airflow("dags", "unpause", DAG_ID)  # the catch-up: 2021-01 .. 2021-03, two at a time
        yield stack
    finally:
        stack.stop()


def _kill(pid: int, sig=signal.SIGKILL) -> None:
    os.kill(pid, sig)


def test_a_killed_postgres_backend_is_survived(supervised):
    """Killing one backend makes Postgres reset every session and recover (~2 s): an Airflow
    component that dies of it is restarted once Postgres answers again."""
    supervised.ensure_a_task_is_running()
    since = len(supervised.supervisor_log())
    backends = [pid for pid, cmd in all_processes().items()
                if cmd.startswith("postgres: airflow airflow") and parent(pid) == supervised.pid_of("postgres")]
    assert backends, "no backend of the metadata DB to kill"

    _kill(backends[0])

    # Postgres answers again, the stack still runs, and whatever died of it was restarted.
    supervised.wait_for(lambda: quietly(lambda: supervised.sql("SELECT 1")), 60, "Postgres to recover")
    time.sleep(15)
    log = supervised.supervisor_log()[since:]
    for line in log.splitlines():
        if "restarting it in" in line:
            name = line.split()[2]
            supervised.wait_for(lambda name=name: supervised.restarted(name, since), 180, f"{name} to restart")


@pytest.mark.parametrize("name", ["s3", "redis", "airflow-scheduler", "postgres", "api-standins"])
def test_a_killed_component_is_restarted_with_its_cause_logged(supervised, name):
    supervised.ensure_a_task_is_running()
    since = len(supervised.supervisor_log())
    pid = supervised.pid_of(name)

    _kill(pid)

    supervised.wait_for(lambda: supervised.restarted(name, since), 180, f"{name} to be restarted")
    log = supervised.supervisor_log()[since:]
    assert f"{name} was killed by SIGKILL" in log, log
    assert supervised.pid_of(name) != pid
    if name == "api-standins":
        supervised.slow_downloads()  # its faults and settings lived in the killed process


def test_a_briefly_paused_s3_is_waited_for_not_restarted(supervised):
    supervised.ensure_a_task_is_running()
    since = len(supervised.supervisor_log())
    pid = supervised.pid_of("s3")

    _kill(pid, signal.SIGSTOP)
    try:  # paused until the supervisor has seen it not answer (it probes every 5 s)
        supervised.wait_for(lambda: "s3 does not answer its health check" in supervised.supervisor_log()[since:],
                            45, "the supervisor to notice the paused s3")
    finally:
        _kill(pid, signal.SIGCONT)

    supervised.wait_for(lambda: "s3 answers again" in supervised.supervisor_log()[since:], 60, "s3 to answer")
    assert supervised.pid_of("s3") == pid
    assert "s3 was" not in supervised.supervisor_log()[since:]


def test_every_run_succeeds_and_every_month_is_exactly_its_raw_file(supervised):
    def finished():
        # Every month's scheduled run exists (the catch-up creates them as the earlier ones finish; a
        # restarted scheduler may take a while) and every run has finished.
        runs = supervised.sql(f"SELECT run_id, state FROM dag_run WHERE dag_id = '{DAG_ID}'")
        complete = sum(run_id.startswith("scheduled__") for run_id, _ in runs) >= len(MONTHS)
        return runs if complete and all(state in ("success", "failed") for _, state in runs) else None

    runs = supervised.wait_for(finished, 900, "every month's nyc_taxi_ingestion run to exist and finish")
    scheduled = [run_id for run_id, _ in runs if run_id.startswith("scheduled__")]
    assert len(scheduled) == len(MONTHS), runs
    failed = [run for run in runs if run[1] != "success"]
    assert not failed, f"{failed}\n{supervised.sql('SELECT run_id, task_id, state, try_number FROM task_instance')}"

    loaded = dict(supervised.warehouse("SELECT to_char(data_month, 'YYYY-MM'), count(*) FROM yellow_taxi_trips "
                                       "GROUP BY 1"))
    import boto3

    conn = supervised.cfg.connections()["aws_default"]
    client = boto3.client("s3", endpoint_url=supervised.cfg.s3_url, region_name="us-east-1",
                          aws_access_key_id=conn["login"], aws_secret_access_key=conn["password"])
    for month in MONTHS:
        raw = client.get_object(Bucket="nyc-tlc", Key=f"raw/yellow_tripdata_{month}.csv.gz")["Body"].read()
        rows = sum(1 for _ in csv.reader(io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(raw))))) - 1
        assert loaded.get(month) == rows, (month, loaded, rows)
        client.head_object(Bucket="nyc-tlc", Key=f"parquet/yellow_tripdata_{month}.parquet")
    assert "keeps dying" not in supervised.console()


def test_every_listener_of_the_stack_is_one_of_its_ports_on_loopback(supervised):
    cfg = supervised.cfg
    ours = {cfg.api_port, cfg.postgres_port, cfg.redis_port, cfg.s3_port, *cfg.s3_internal_ports, cfg.standin_port,
            cfg.scheduler_health_port, cfg.worker_log_port, cfg.trigger_log_port,
            cfg.s3_internal_ports[9] + 10000}  # SeaweedFS's admin gRPC (see S3Service)
    listeners = tcp_listeners(descendants(supervised.proc.pid))

    assert listeners, "no listening socket found"
    assert all(address in ("127.0.0.1", "::1") for address, _, _ in listeners), sorted(listeners)
    strangers = {(port, cmdline(pid)) for _, port, pid in listeners if port not in ours}
    assert not strangers, strangers
    assert {cfg.worker_log_port, cfg.trigger_log_port} <= {port for _, port, _ in listeners}


def test_ctrl_c_stops_everything_and_leaves_no_process(supervised):
    children = supervised.children()
    assert len(children) == 9, children  # 4 servers, 4 Airflow components, the log server

    os.killpg(supervised.proc.pid, signal.SIGINT)
    code = supervised.proc.wait(90)

    assert code == 0, supervised.console()[-3000:]
    state = str(supervised.state_dir)
    left = {pid: cmd for pid, cmd in all_processes(with_environ=True).items() if state in cmd}
    assert not left, left
