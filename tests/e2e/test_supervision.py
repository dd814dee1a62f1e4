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
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from unittest import mock

import pytest

from devstack.services import free_port, port_in_use
from devstack.stack import ROOT

LAST_MONTH = "2021-03"
MONTHS = ["2021-01", "2021-02", "2021-03"]
ROWS_PER_MONTH = 20_000
SLOW_DOWNLOAD = "slow_12"
DAG_ID = "nyc_taxi_ingestion"
pytestmark = pytest.mark.usefixtures("stack")  # a missing server install fails with its message


class SupervisedStack:
    def __init__(self, tmp: Path):
        while True:  # S3: 12 consecutive free ports (gateway + 11 internal) and admin + 10000
            s3 = free_port()
            if s3 < 55000 and not any(port_in_use(p) for p in [*range(s3, s3 + 12), s3 + 10 + 10000]):
                break
        self.state_dir = tmp / "state"
        ports = {name: str(free_port()) for name in ("API", "POSTGRES", "REDIS", "STANDIN", "SCHEDULER_HEALTH",
                                                      "WORKER_LOG", "TRIGGER_LOG")}
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW__", "AIRFLOW_HOME"))}
        self.env = env | {f"DEVSTACK_{name}_PORT": port for name, port in ports.items()} | {
            "DEVSTACK_S3_PORT": str(s3), "DEVSTACK_STATE_DIR": str(self.state_dir),
            "NYC_TAXI_END_MONTH": LAST_MONTH,
            # A killed scheduler takes its task processes with it: Airflow notices their silence after
            # this many seconds (300 by default) and retries them.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "40",
        }
        with mock.patch.dict(os.environ, self.env, clear=True):
            from devstack.stack import StackConfig

            self.cfg = StackConfig.for_run(offline=True)
        self.output = tmp / "make-run.log"
        self.proc: subprocess.Popen | None = None

    # -- the stack --------------------------------------------------------------------------------
    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "devstack", "run", "--offline"], env=self.env, cwd=ROOT,
                                     stdout=open(self.output, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                     start_new_session=True)
        self.wait_for(lambda: "Airflow is up" in self.console(), 300, "make run to start")

    def console(self) -> str:
        return self.output.read_text(errors="replace")

    def supervisor_log(self) -> str:
        path = self.cfg.log_dir / "supervisor.log"
        return path.read_text() if path.exists() else ""

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"make run exited ({self.proc.returncode}) while waiting for {what}:\n"
                            f"{self.console()[-4000:]}")
            value = predicate()
            if value:
                return value
            time.sleep(1)
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\nsupervisor log:\n{self.supervisor_log()}"
                    f"\nconsole:\n{self.console()[-3000:]}")

    def airflow(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "devstack", "airflow", *args], env=self.env, cwd=ROOT,
                                capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result.stdout

    def sql(self, query: str) -> list[tuple]:
        """The metadata DB, one connection per query: Postgres itself gets killed here."""
        import sqlalchemy

        with mock.patch.dict(os.environ, self.env, clear=True):
            from devstack.stack import airflow_env

            url = airflow_env(self.cfg)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sqlalchemy.text(query))]
        finally:
            engine.dispose()

    def warehouse(self, query: str) -> list[tuple]:
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.cfg.warehouse_url(), poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sqlalchemy.text(query))]
        finally:
            engine.dispose()

    def standin(self, path: str, payload: dict) -> None:
        request = urllib.request.Request(f"{self.cfg.standin_url}/_standin/{path}", data=json.dumps(payload).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).close()

    def slow_downloads(self) -> None:
        self.standin("config", {"tlc_rows_per_month": ROWS_PER_MONTH})
        self.standin("faults", {"path": "/trip-data/", "kind": SLOW_DOWNLOAD, "times": None})

    # -- processes --------------------------------------------------------------------------------
    def children(self) -> dict[int, str]:
        """pid -> command line of make run's direct children (its servers and Airflow components)."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.proc.pid:
                    found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        return found

    def pid_of(self, name: str) -> int:
        markers = {"postgres": "pgdata", "redis": "valkey-server", "s3": " mini ", "api-standins": "devstack.standins",
                   "airflow-scheduler": "airflow scheduler", "airflow-dag-processor": "airflow dag-processor"}
        (pid,) = [pid for pid, cmd in self.children().items() if markers[name] in cmd]
        return pid

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

    def restarted(self, name: str, since: int) -> bool:
        return f"{name} restarted and answering" in self.supervisor_log()[since:]


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
        if stack.proc is not None and stack.proc.poll() is None:
            os.killpg(stack.proc.pid, signal.SIGINT)
            try:
                stack.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(stack.proc.pid, signal.SIGKILL)


def _kill(pid: int, sig=signal.SIGKILL) -> None:
    os.kill(pid, sig)


def test_a_killed_postgres_backend_is_survived(supervised):
    """Killing one backend makes Postgres reset every session and recover (~2 s): an Airflow
    component that dies of it is restarted once Postgres answers again."""
    supervised.ensure_a_task_is_running()
    since = len(supervised.supervisor_log())
    backends = [pid for pid, cmd in _all_processes().items()
                if cmd.startswith("postgres: airflow airflow") and _parent(pid) == supervised.pid_of("postgres")]
    assert backends, "no backend of the metadata DB to kill"

    _kill(backends[0])

    # Postgres answers again, the stack still runs, and whatever died of it was restarted.
    supervised.wait_for(lambda: _quietly(lambda: supervised.sql("SELECT 1")), 60, "Postgres to recover")
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
    try:
        time.sleep(20)
    finally:
        _kill(pid, signal.SIGCONT)

    supervised.wait_for(lambda: "s3 answers again" in supervised.supervisor_log()[since:], 30, "s3 to answer")
    assert supervised.pid_of("s3") == pid
    assert "s3 was" not in supervised.supervisor_log()[since:]


def test_every_run_succeeds_and_every_month_is_exactly_its_raw_file(supervised):
    def finished():
        runs = supervised.sql(f"SELECT run_id, state FROM dag_run WHERE dag_id = '{DAG_ID}'")
        return runs if runs and all(state in ("success", "failed") for _, state in runs) else None

    runs = supervised.wait_for(finished, 900, "every nyc_taxi_ingestion run to finish")
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
    listeners = _tcp_listeners(_descendants(supervised.proc.pid))

    assert listeners, "no listening socket found"
    assert all(address in ("127.0.0.1", "::1") for address, _, _ in listeners), sorted(listeners)
    strangers = {(port, _cmdline(pid)) for _, port, pid in listeners if port not in ours}
    assert not strangers, strangers
    assert {cfg.worker_log_port, cfg.trigger_log_port} <= {port for _, port, _ in listeners}


def test_ctrl_c_stops_everything_and_leaves_no_process(supervised):
    children = supervised.children()
    assert len(children) == 9, children  # 4 servers, 4 Airflow components, the log server

    os.killpg(supervised.proc.pid, signal.SIGINT)
    code = supervised.proc.wait(90)

    assert code == 0, supervised.console()[-3000:]
    state = str(supervised.state_dir)
    left = {pid: cmd for pid, cmd in _all_processes(with_environ=True).items() if state in cmd}
    assert not left, left


def _all_processes(with_environ: bool = False) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                text = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if with_environ:
                    text += " " + (entry / "environ").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found[int(entry.name)] = text
    return found


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:300]
    return "?"


def _parent(pid: int) -> int:
    with contextlib.suppress(OSError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return -1


def _quietly(call):
    try:
        return call()
    except Exception:  # noqa: BLE001 - "not yet"
        return None


def _descendants(root: int) -> set[int]:
    parents = {pid: _parent(pid) for pid in _all_processes()}
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += [child for child, parent in parents.items() if parent == pid and child not in found]
    return found


def _tcp_listeners(pids: set[int]) -> set[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket those processes hold (/proc/net/tcp{,6})."""
    import ipaddress

    listening: dict[str, tuple[str, int]] = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(address_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(raw)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            listening[fields[9]] = (str(address), int(port_hex, 16))
    found = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in listening:
                        found.add((*listening[target[8:-1]], pid))
    return found

