"""`make dag DAG=<dag_id> [DATE=...] [CONF='{...}'] [OFFLINE=1]`: run one DAG once against the local
stack and print each task's state - the Docker-free twin of `astro run <dag_id>`. CONF is the run's
conf, as the trigger form's params (e.g. `CONF='{"month": "2021-03"}'` for nyc_taxi_ingestion).

- `make run` is up (its API server answers): the run is triggered through that stack's scheduler,
  like the UI's trigger button, and followed until it ends. The DAG must be unpaused, as in the UI.
- Nothing is running: the stack's servers start from `.local/` (the same data `make run` uses),
  the metadata DB is migrated and seeded from airflow_settings.yaml, the DAG runs once in-process
  with `dag.test()` - no scheduler, as `astro run` does in its container - and the servers stop.

Exit status 0 when the run succeeded, 1 when it failed, 2 when it could not start.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime

FINISHED = {"success", "failed"}


def parse_date(text: str | None) -> datetime | None:
    """`2021-02-02` or `2021-02-02T06:00` (UTC unless an offset is given)."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def report(dag_id: str, run, task_instances, seconds: float) -> str:
    """The summary printed after the run: one line for the run, one per task."""
    lines = [f"\nDAG {dag_id}  run {run.run_id}  state {run.state}  ({seconds:.1f}s)",
             f"  {'task':<34} {'state':<18} {'try':>3} {'duration':>9}"]
    for ti in sorted(task_instances, key=lambda t: (t.start_date or datetime.max.replace(tzinfo=UTC), t.task_id)):
        name = ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else "")
        duration = f"{ti.duration:.1f}s" if ti.duration is not None else "-"
        lines.append(f"  {name:<34} {ti.state or 'none':<18} {ti.try_number:>3} {duration:>9}")
    return "\n".join(lines)


def _in_process(dag_id: str, logical_date: datetime | None, conf: dict | None = None) -> int:
    """Inside the stack's Airflow environment, without a scheduler: dag.test()."""
    from airflow.models import DagBag  # noqa: PLC0415
    from airflow.settings import DAGS_FOLDER  # noqa: PLC0415

    bag = DagBag(dag_folder=DAGS_FOLDER)
    dag = bag.get_dag(dag_id)
    if dag is None:
        errors = "".join(f"\n  {path}: {error.strip().splitlines()[-1]}" for path, error in bag.import_errors.items())
        print(f"ERROR: no DAG `{dag_id}` in {DAGS_FOLDER}{errors}", file=sys.stderr)
        return 2
    started = time.monotonic()
    run = dag.test(logical_date=logical_date, run_conf=conf)
    print(report(dag_id, run, run.get_task_instances(), time.monotonic() - started))
    return 0 if run.state == "success" else 1


def _through_scheduler(dag_id: str, logical_date: datetime | None, conf: dict | None = None) -> int:
    """Inside the stack's Airflow environment, with `make run`'s scheduler: trigger, then follow."""
    from airflow.api.common.trigger_dag import trigger_dag  # noqa: PLC0415
    from airflow.models import DagModel, DagRun  # noqa: PLC0415
    from airflow.utils.session import create_session  # noqa: PLC0415
    from airflow.utils.types import DagRunTriggeredByType  # noqa: PLC0415

    model = DagModel.get_dagmodel(dag_id)
    if model is None:
        print(f"ERROR: make run's dag-processor has not registered a DAG `{dag_id}` "
              "(typo? import error? `make airflow CMD='dags list-import-errors'`)", file=sys.stderr)
        return 2
    if model.is_paused:
        print(f"ERROR: `{dag_id}` is paused, so the scheduler would never run it. Unpause it in the UI "
              f"or with `make airflow CMD='dags unpause {dag_id}'`, then run this again.", file=sys.stderr)
        return 2
    started = time.monotonic()
    # run_after = the date too: Airflow infers a manual run's data interval from run_after, and
    # dag.test() (the other mode) from the logical date - the same DATE must mean the same interval.
    run = trigger_dag(dag_id, triggered_by=DagRunTriggeredByType.CLI, logical_date=logical_date,
                      run_after=logical_date, conf=conf, triggering_user_name="make dag")
    print(f"Triggered {dag_id} run {run.run_id}; following it (Ctrl-C stops following, not the run) ...",
          flush=True)
    seen: dict[str, str] = {}
    while True:
        with create_session() as session:
            current = session.query(DagRun).filter_by(dag_id=dag_id, run_id=run.run_id).one()
            task_instances = current.get_task_instances(session=session)
            for ti in task_instances:
                key = ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else "")
                if ti.state and seen.get(key) != ti.state:
                    seen[key] = ti.state
                    print(f"  {time.monotonic() - started:6.1f}s  {key}: {ti.state}", flush=True)
            if current.state in FINISHED:
                print(report(dag_id, current, task_instances, time.monotonic() - started))
                return 0 if current.state == "success" else 1
        time.sleep(1)


def _scheduler_status(cfg, wait_s: float = 30) -> str | None:
    """None when nothing listens on make run's API port; else the scheduler's health as the API
    reports it ("healthy", "unhealthy", or why it could not be read), waiting up to wait_s for
    "healthy" (a stack that is still starting)."""
    from devstack.services import port_in_use  # noqa: PLC0415

    if not port_in_use(cfg.api_port):
        return None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            url = f"http://127.0.0.1:{cfg.api_port}/api/v2/monitor/health"
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - local URL
                status = json.load(resp).get("scheduler", {}).get("status") or "unknown"
        except (OSError, ValueError) as exc:
            status = f"no health answer ({exc})"
        if status == "healthy" or time.monotonic() > deadline:
            return status
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make dag", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dag_id")
    parser.add_argument("--date", help="logical date, e.g. 2021-02-02 or 2021-02-02T06:00 (UTC); default: now")
    parser.add_argument("--conf", help="the run's conf as JSON (the trigger form's params), "
                                       "e.g. '{\"month\": \"2021-03\"}'")
    parser.add_argument("--offline", action="store_true", help="third-party APIs answered by the stand-ins")
    parser.add_argument("--inside", choices=["test", "scheduler"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # Without DATE: now, as the UI's trigger form fills it in. A run with no logical date at all
    # would have no data interval, which the interval-based DAGs refuse.
    logical_date = parse_date(args.date) or datetime.now(UTC).replace(microsecond=0)
    try:
        conf = json.loads(args.conf) if args.conf else None
    except ValueError as exc:
        print(f"ERROR: CONF is not JSON ({exc}): e.g. CONF='{{\"month\": \"2021-03\"}}'", file=sys.stderr)
        return 2
    if conf is not None and not isinstance(conf, dict):
        print("ERROR: CONF must be a JSON object, e.g. CONF='{\"month\": \"2021-03\"}'", file=sys.stderr)
        return 2
    if args.inside == "test":
        return _in_process(args.dag_id, logical_date, conf)
    if args.inside == "scheduler":
        return _through_scheduler(args.dag_id, logical_date, conf)

    from devstack.services import ServiceError  # noqa: PLC0415
    from devstack.stack import StackConfig, airflow_env, migrate_and_seed, start_services, stop_all  # noqa: PLC0415

    cfg = StackConfig.for_run(offline=args.offline)
    command = [sys.executable, "-m", "devstack.run_dag", args.dag_id, "--date", logical_date.isoformat(),
               *(["--conf", args.conf] if args.conf else [])]
    status = _scheduler_status(cfg)
    if status == "healthy":
        # make run decided OFFLINE when it started; its connections and variables are in its DB.
        print(f"make run is up on port {cfg.api_port}: triggering through its scheduler", flush=True)
        return subprocess.run([*command, "--inside", "scheduler"], env=airflow_env(cfg), check=False).returncode
    if status is not None:
        print(f"ERROR: something answers on make run's port {cfg.api_port}, but its scheduler is not healthy "
              f"({status}). Wait for make run to finish starting, or see {cfg.log_dir}.", file=sys.stderr)
        return 2
    print(f"make run is not up: starting the stack's servers from {cfg.state_dir} for this run", flush=True)
    services = []
    try:
        services = start_services(cfg)
        env = airflow_env(cfg)
        migrate_and_seed(cfg, env)
        return subprocess.run([*command, "--inside", "test"], env=env, check=False).returncode
    except ServiceError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    finally:
        stop_all(services)


if __name__ == "__main__":
    sys.exit(main())
