"""Parse time of every DAG file, against a one-task baseline DAG measured the same way.

Each file is parsed in a fresh interpreter that has already imported Airflow (as the
dag-processor has), so the figure is what the file itself costs: its imports and top-level code.
Targets (issue #2): every file under 100 ms, all files together under 1 s.

    make parse-times            # 7 rounds, median
    python -m devstack.parse_times --rounds 15
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PER_FILE_TARGET_MS = 100.0
TOTAL_TARGET_MS = 1000.0

BASELINE_DAG = '''
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG(dag_id="parse_time_baseline", schedule=None, tags=["baseline"]):
    EmptyOperator(task_id="noop")
'''

# Runs in the child: warm up Airflow and the DagBag machinery, then time one parse of the file.
_CHILD = r'''
import json, os, sys, time
from airflow.models import DagBag
DagBag(dag_folder=os.devnull)  # load the parsing machinery itself
path = sys.argv[1]
started = time.perf_counter()
bag = DagBag(dag_folder=path)
elapsed = (time.perf_counter() - started) * 1000
print(json.dumps({"ms": elapsed, "dags": len(bag.dags), "errors": {k: v for k, v in bag.import_errors.items()}}))
'''


def parse_once(path: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True,
                            cwd=ROOT, env=_env())
    if result.returncode != 0:
        raise RuntimeError(f"parsing {path} crashed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")  # no metadata DB needed to parse
    return env


def measure(path: Path, rounds: int) -> tuple[float, dict]:
    samples, last = [], {}
    for _ in range(rounds):
        last = parse_once(path)
        samples.append(last["ms"])
    return statistics.median(samples), last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)

    files = sorted(p for p in (ROOT / "dags").glob("*.py"))
    with tempfile.TemporaryDirectory() as tmp:
        baseline_file = Path(tmp) / "parse_time_baseline.py"
        baseline_file.write_text(BASELINE_DAG)
        baseline_ms, _ = measure(baseline_file, args.rounds)

    print(f"DAG file parse times (median of {args.rounds} fresh interpreters, Airflow pre-imported)")
    print(f"{'file':<40} {'dags':>4} {'ms':>8} {'x baseline':>11}  target")
    print(f"{'(baseline: one EmptyOperator)':<40} {1:>4} {baseline_ms:>8.1f} {1.0:>11.2f}")
    total, worst_ok, errors = 0.0, True, 0
    for path in files:
        ms, result = measure(path, args.rounds)
        total += ms
        within = ms < PER_FILE_TARGET_MS
        worst_ok &= within
        errors += len(result["errors"])
        print(f"{path.relative_to(ROOT).as_posix():<40} {result['dags']:>4} {ms:>8.1f} {ms / baseline_ms:>11.2f}"
              f"  {'ok' if within else 'OVER'} (<{PER_FILE_TARGET_MS:.0f} ms)")
        for file, error in result["errors"].items():
            print(f"    import error in {file}: {error.strip().splitlines()[-1]}")
    print(f"{'all files':<40} {'':>4} {total:>8.1f} {total / baseline_ms:>11.2f}"
          f"  {'ok' if total < TOTAL_TARGET_MS else 'OVER'} (<{TOTAL_TARGET_MS:.0f} ms)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
