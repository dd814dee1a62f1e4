"""`make bench-executors`: the same batch of runs on the LocalExecutor, on Celery with one worker and
with two, each on a fresh `make run OFFLINE=1` stack of its own; prints wall times and ratios.

The batch: a catch-up of small NYC taxi months (download, parquet, bulk load) and a burst of weather
(Open-Meteo -> S3) and exchange-rate (TwelveData -> S3, one of them in a virtualenv) runs - every run
triggered at once through the stack's scheduler, timed from the trigger until the last run ends.
Task slots are the same in every mode (`--slots`, default 8: LocalExecutor parallelism and each
worker's concurrency), so the comparison is the executors', not their sizing. Start-up is not
timed. On a machine with few cores the tasks compete for the same CPUs whichever executor runs
them: read the ratios against `nproc`.

    python -m devstack.bench_executors [--months 4] [--rows 200000] [--runs 8] [--slots 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from devstack.livestack import LiveStack


def batch(months: int, runs: int) -> list[tuple]:
    taxi = [("nyc_taxi_ingestion", f"2021-{m + 1:02d}-02T06:00:00+00:00", {"month": f"2021-{m:02d}"})
            for m in range(1, months + 1)]
    weather = [("weather_data_s3", f"2025-06-{day:02d}T00:00:00+00:00", None) for day in range(1, runs + 1)]
    rates = [("scheduling_dataset_gathering", f"2025-03-10T12:{minute:02d}:00+00:00", None)
             for minute in range(runs)]
    venv = [("scheduling_with_venvs", f"2025-03-10T13:{minute:02d}:00+00:00", None) for minute in range(2)]
    return taxi + weather + rates + venv


def measure(mode: str, workers: int, runs: list[tuple], rows: int, slots: int, keep: Path) -> dict:
    env = {"DEVSTACK_EXECUTOR": mode, "DEVSTACK_WORKERS": str(workers), "AIRFLOW__CORE__PARALLELISM": str(slots),
           "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(slots),
           # Only the batch: unpausing the taxi DAG must not start its own catch-up beside it.
           "NYC_TAXI_END_MONTH": "2020-12"}
    stack = LiveStack(keep / f"{mode}-{workers}", env)
    try:
        started = time.monotonic()
        stack.start()
        startup = time.monotonic() - started
        dag_ids = {dag_id for dag_id, _, _ in runs}
        stack.wait_for(lambda: len(stack.sql("SELECT dag_id FROM dag WHERE dag_id IN ("  # noqa: S608 - our ids
                                             + ",".join(f"'{d}'" for d in dag_ids) + ")")) == len(dag_ids),
                       300, "the DAGs to be parsed")
        stack.standin("config", {"tlc_rows_per_month": rows, "twelvedata_credits_per_minute": 100_000})
        # Warm: the first virtualenv build and the TLC months' generation are not the executor's work.
        for month in {conf["month"] for dag_id, _, conf in runs if conf}:
            url = f"{stack.cfg.standin_url}/DataTalksClub/nyc-tlc-data/releases/download/yellow/" \
                  f"yellow_tripdata_{month}.csv.gz"
            with urllib.request.urlopen(url, timeout=600) as resp:  # noqa: S310 - local URL
                while resp.read(1 << 20):
                    pass
        t0 = time.monotonic()
        result = stack.trigger(runs)
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-3000:])

        def done():
            states = stack.sql("SELECT state FROM dag_run WHERE run_type = 'manual'")
            return states if len(states) == len(runs) and all(s in ("success", "failed") for (s,) in states) else None

        states = stack.wait_for(done, 3600, "the batch")
        wall = time.monotonic() - t0
        failed = sum(1 for (s,) in states if s != "success")
        tasks = stack.sql("SELECT count(*), sum(extract(epoch FROM end_date - start_date)) FROM task_instance "
                          "WHERE state = 'success'")[0]
        hosts = dict(stack.sql("SELECT hostname, count(*) FROM task_instance GROUP BY 1"))
        return {"mode": mode if mode == "local" else f"celery x{workers}", "wall_s": wall, "startup_s": startup,
                "failed": failed, "tasks": tasks[0], "task_seconds": float(tasks[1] or 0), "hosts": hosts}
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench-executors", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--months", type=int, default=4, help="NYC taxi months (2021-01 on)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows per taxi month")
    parser.add_argument("--runs", type=int, default=8, help="weather runs, and as many exchange-rate runs")
    parser.add_argument("--slots", type=int, default=8, help="task slots: parallelism / worker concurrency")
    args = parser.parse_args(argv)
    runs = batch(args.months, args.runs)
    print(f"Batch: {len(runs)} runs ({args.months} taxi months x {args.rows:,} rows, {args.runs} weather, "
          f"{args.runs} exchange-rate, 2 virtualenv); {args.slots} task slots; {os.cpu_count()} cores", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-executors-") as keep:
        for mode, workers in (("local", 1), ("celery", 1), ("celery", 2)):
            print(f"  {mode} x{workers} ...", flush=True)
            results.append(measure(mode, workers, runs, args.rows, args.slots, Path(keep)))
            r = results[-1]
            print(f"    {r['wall_s']:.1f}s for the batch (start-up {r['startup_s']:.0f}s), {r['tasks']} tasks, "
                  f"{r['failed']} failed runs, tasks per host {r['hosts']}", flush=True)
    base = results[0]["wall_s"]
    print(f"\n{'executor':<12} {'batch wall':>10} {'vs local':>9} {'task-seconds':>13}")
    for r in results:
        print(f"{r['mode']:<12} {r['wall_s']:>9.1f}s {r['wall_s'] / base:>8.2f}x {r['task_seconds']:>12.0f}s")
    return 0 if all(r["failed"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
