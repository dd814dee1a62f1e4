"""A real `python -m devstack run --offline` driven from outside: a state folder and ports of its own,
started as a user starts `make run`, driven through its CLI, its metadata DB and its stand-ins,
inspected through /proc. Used by the end-to-end tests (test_supervision.py, test_celery.py) and by
`make bench-executors`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from unittest import mock

from devstack.services import distinct_free_ports, free_s3_base_port, s3_block_ports
from devstack.stack import ROOT

# Unpause the DAGs of a batch, then trigger each run (dag_id, logical date ISO, conf) - as the UI's
# trigger button does, through the stack's own scheduler. Runs in the stack's Airflow environment.
TRIGGER = """
import json, sys
from datetime import datetime
from airflow.api.common.trigger_dag import trigger_dag
from airflow.models import DagModel
from airflow.utils.session import create_session
from airflow.utils.types import DagRunTriggeredByType

batch = json.loads(sys.argv[1])
with create_session() as session:
    for dag_id in {dag_id for dag_id, _, _ in batch}:
        session.query(DagModel).filter(DagModel.dag_id == dag_id).update({"is_paused": False})
for dag_id, at, conf in batch:
    when = datetime.fromisoformat(at)
    trigger_dag(dag_id, triggered_by=DagRunTriggeredByType.CLI, logical_date=when, run_after=when, conf=conf,
                triggering_user_name="bench")
"""


MIRROR_PATH = "/DataTalksClub/nyc-tlc-data/releases/download/yellow/yellow_tripdata_{month}.csv.gz"


class LiveStack:
    def __init__(self, tmp: Path, extra_env: dict[str, str] | None = None):
        s3 = free_s3_base_port()
        self.state_dir = tmp / "state"
        names = ("API", "POSTGRES", "REDIS", "STANDIN", "SCHEDULER_HEALTH", "WORKER_LOG", "TRIGGER_LOG", "FLOWER")
        # Distinct, and none inside the S3 block (a Redis once took the S3 block's port before S3 bound it).
        ports = dict(zip(names, map(str, distinct_free_ports(len(names), taken=set(s3_block_ports(s3)))), strict=True))
        # Nothing of the caller's own stack (make test's servers, folders, keys) leaks in.
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("AIRFLOW", "DEVSTACK_", "WEATHER_", "TWELVEDATA_", "STRAVA_", "NYC_TAXI_"))}
        self.env = env | {f"DEVSTACK_{name}_PORT": port for name, port in ports.items()} | {
            "DEVSTACK_S3_PORT": str(s3), "DEVSTACK_STATE_DIR": str(self.state_dir),
        } | (extra_env or {})
        with mock.patch.dict(os.environ, self.env, clear=True):
            from devstack.stack import StackConfig  # noqa: PLC0415 - heavy, only when used

            self.cfg = StackConfig.for_run(offline=True)
        self.output = tmp / "make-run.log"
        self.proc: subprocess.Popen | None = None

    def use_course_mirror(self, first_month: str, last_month: str) -> None:
        """Before start(): nyc_taxi_ingestion reads the course's CSV.gz mirror (the `nyc_tlc` path template
        switched back to it, as a user would) and catches up first_month..last_month."""
        import json  # noqa: PLC0415

        from devstack.settings import connection_env  # noqa: PLC0415

        conn = json.loads(connection_env("nyc_tlc", self.cfg.connections()["nyc_tlc"])[1])
        conn["extra"] = {**conn.get("extra", {}), "path": MIRROR_PATH}
        self.env |= {"AIRFLOW_CONN_NYC_TLC": json.dumps(conn), "NYC_TAXI_START_MONTH": first_month,
                     "NYC_TAXI_END_MONTH": last_month}

    # -- the stack --------------------------------------------------------------------------------
    def start(self) -> None:
        self.output.parent.mkdir(parents=True, exist_ok=True)
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
                raise AssertionError(f"make run exited ({self.proc.returncode}) while waiting for {what}:\n"
                                     f"{self.console()[-4000:]}")
            value = predicate()
            if value:
                return value
            time.sleep(1)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n"
                             f"supervisor log:\n{self.supervisor_log()}\nconsole:\n{self.console()[-3000:]}")

    def airflow(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "devstack", "airflow", *args], env=self.env, cwd=ROOT,
                                capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result.stdout

    def sql(self, query: str) -> list[tuple]:
        """The metadata DB, one connection per query: Postgres itself gets killed here."""
        import sqlalchemy  # noqa: PLC0415 - heavy, only when used

        with mock.patch.dict(os.environ, self.env, clear=True):
            from devstack.stack import airflow_env  # noqa: PLC0415 - heavy, only when used

            url = airflow_env(self.cfg)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sqlalchemy.text(query))]
        finally:
            engine.dispose()

    def warehouse(self, query: str) -> list[tuple]:
        import sqlalchemy  # noqa: PLC0415 - heavy, only when used

        engine = sqlalchemy.create_engine(self.cfg.warehouse_url(), poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sqlalchemy.text(query))]
        finally:
            engine.dispose()

    def standin(self, path: str, payload: dict) -> None:
        request = urllib.request.Request(f"{self.cfg.standin_url}/_standin/{path}", data=json.dumps(payload).encode(),  # noqa: S310 - the stand-ins' local URL
                                         method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - the stand-ins' local URL

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
        marker = markers.get(name) or (f"--celery-hostname {name.removeprefix('airflow-')}@" if
                                       name.startswith("airflow-worker-") else name)
        (pid,) = [pid for pid, cmd in self.children().items() if marker in cmd]
        return pid

    def restarted(self, name: str, since: int) -> bool:
        return f"{name} restarted and answering" in self.supervisor_log()[since:]


    def exec(self, *command: str) -> subprocess.CompletedProcess:
        """A command in the stack's Airflow environment (`make` equivalents: devstack exec --offline)."""
        return subprocess.run([sys.executable, "-m", "devstack", "exec", "--offline", "--", *command], env=self.env,
                              cwd=ROOT, capture_output=True, text=True, timeout=600)

    def trigger(self, runs: list) -> subprocess.CompletedProcess:
        return self.exec(sys.executable, "-c", TRIGGER, json.dumps(runs))

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return None


def all_processes(with_environ: bool = False) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                text = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if with_environ:
                    text += " " + (entry / "environ").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found[int(entry.name)] = text
    return found


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:300]
    return "?"


def parent(pid: int) -> int:
    with contextlib.suppress(OSError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return -1


def quietly(call):
    try:
        return call()
    except Exception:  # noqa: BLE001 - "not yet"
        return None


def descendants(root: int) -> set[int]:
    parents = {pid: parent(pid) for pid in all_processes()}
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += [child for child, parent in parents.items() if parent == pid and child not in found]
    return found


def tcp_listeners(pids: set[int]) -> set[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket those processes hold (/proc/net/tcp{,6})."""
    import ipaddress  # noqa: PLC0415 - heavy, only when used

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

