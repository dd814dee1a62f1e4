"""NYC taxi load benchmark: the project's steps against raw COPY (and pgpq, ADBC or pandas `to_sql`),
in one run on one machine, with throwaway real Postgres, S3 and the TLC stand-ins.

    make bench                                    # the publisher's parquet month 2025-09, 4,251,015 trips
    make bench SOURCE=parquet MONTH=2025-09 ROWS=1000000
    make bench SOURCE=csv ROWS=2000000            # the course mirror's CSV month (2021-01)

SOURCE=parquet (the shipped source): the TLC publisher stand-in serves MONTH's file in its era's real
schema (2025 on: cbd_congestion_fee, large_string, int32 ids) with ROWS trips (default: the real
month's count) plus its few pickups outside the month; the project's steps run on it - download,
conform, load (binary COPY into the staged table), the DAG's checks, publish - against raw COPY of
the same rows (CSV and binary files made beforehand), pgpq and ADBC (installed on the fly into
.local/bench-packages, never into the venv or the image; skipped with the reason when they cannot
be), the load again at half the rows (memory flat in rows?) and the whole DAG run.

SOURCE=csv: the course mirror's CSV month of ROWS rows, raw COPY and pandas `to_sql`.

Prints rows/s of each method, the ratios (targets: load >= 0.8x raw COPY, whole DAG run <= 4x the
raw COPY time) and the peak resident memory of each step, each run in its own process (target:
<= 300 MB, not growing with rows). Every figure is measured here, now.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from devstack.stack import ROOT, StackConfig, migrate_metadata_db, start_services, stop_all, throwaway_env
from devstack.standins.tlc import csv_lines
from include.nyc_taxi import COLUMNS, CSV_COLUMNS, MIRROR_PATH

CSV_MONTH = "2021-01"
PARQUET_MONTH = "2025-09"
PANDAS_CHUNK = 100_000
# pgpq and ADBC's Postgres driver: only the benchmark uses them, so they go to a folder of their own
# (on the baselines' PYTHONPATH), not into the venv or requirements.txt (the Astro image).
EXTRAS = ("pgpq==0.12.0", "adbc-driver-manager==1.13.0", "adbc-driver-postgresql==1.13.0")
EXTRAS_DIR = ROOT / ".local" / "bench-packages"


def _step(name: str, code: str, env: dict) -> dict:
    """Run `code` in a fresh interpreter, started by a small wrapper whose RUSAGE_CHILDREN is that
    one process alone: (seconds, peak RSS MB, output)."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        f"p = subprocess.run([sys.executable, '-c', {code!r}], capture_output=True, text=True)\n"
        "dt = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "marks = [l for l in p.stdout.splitlines() if l.startswith(('work_s ', 'run_s ', 'out '))]\n"
        "print(json.dumps({'rc': p.returncode, 'seconds': dt, 'rss_mb': rss, 'out': '\\n'.join(marks),"
        " 'err': p.stderr[-3000:]}))\n"
    )
    result = subprocess.run([sys.executable, "-c", wrapper], env=env, cwd=ROOT, capture_output=True, text=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if report["rc"] != 0:
        raise RuntimeError(f"{name} failed:\n{report['err']}")
    report["name"] = name
    work = [line.split()[1] for line in report["out"].splitlines() if line.startswith("work_s ")]
    report["work_s"] = float(work[-1]) if work else report["seconds"]
    return report


def _call(function: str, month: str = CSV_MONTH, *args: str) -> str:
    """Code for one project step; prints how long the work itself took (start-up excluded)."""
    arguments = ", ".join(repr(a) for a in (month, *args))
    return (f"import time\nfrom include.nyc_taxi import {function}\nt = time.perf_counter()\n"
            f"{function}({arguments})\nprint('work_s', time.perf_counter() - t)")


def _out(report: dict) -> dict:
    """What a step printed as `out <json>`."""
    return json.loads(next(line[4:] for line in report["out"].splitlines() if line.startswith("out ")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=("parquet", "csv"), default="parquet",
                        help="parquet: the TLC publisher's month (default); csv: the course mirror's")
    parser.add_argument("--month", help=f"parquet: the publisher's month (default {PARQUET_MONTH}); csv: ignored")
    parser.add_argument("--rows", type=int, help="trips in the month (default: parquet the real month's, csv 2M)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each COPY baseline and of the load (medians)")
    parser.add_argument("--pandas-rows", type=int, default=200_000, help="csv: to_sql is slow, timed on a subset")
    args = parser.parse_args(argv)
    if args.source == "parquet":
        return bench_parquet(args)
    args.rows = args.rows or 2_000_000
    return bench_csv(args)


def bench_csv(args) -> int:
    MONTH = CSV_MONTH  # noqa: N806 - the mirror's month
    state = Path(tempfile.mkdtemp(prefix="nyc-taxi-bench-"))
    cfg = StackConfig.for_tests(state)
    services = []
    try:
        print(f"Starting throwaway Postgres, Redis, S3 and stand-ins in {state}", flush=True)
        services = start_services(cfg)
        env = throwaway_env(cfg)
        # The shipped `nyc_tlc` connection reads the TLC's parquet files: back to the course mirror.
        conn = json.loads(env["AIRFLOW_CONN_NYC_TLC"])
        env["AIRFLOW_CONN_NYC_TLC"] = json.dumps({**conn, "extra": {**conn.get("extra", {}), "path": MIRROR_PATH}})
        migrate_metadata_db(env)

        csv_path, gz_path = state / "month.csv", state / "month.csv.gz"
        t0 = time.perf_counter()
        with csv_path.open("w") as plain:
            for text in csv_lines(MONTH, args.rows):
                plain.write(text)
        with csv_path.open("rb") as src, gzip.open(gz_path, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        print(f"Generated {args.rows:,} rows ({csv_path.stat().st_size / 1e6:.0f} MB CSV, "
              f"{gz_path.stat().st_size / 1e6:.0f} MB gzip) in {time.perf_counter() - t0:.0f}s", flush=True)
        request = urllib.request.Request(f"{cfg.standin_url}/_standin/config", method="POST",  # noqa: S310
                                         data=json.dumps({"tlc_files": {MONTH: str(gz_path)}}).encode())
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310 - the local stand-in

        table_sql = (ROOT / "include/sql/yellow_taxi_trips/V1__create_table.sql").read_text()
        baseline_sql = table_sql.split("CREATE TABLE IF NOT EXISTS yellow_taxi_trips", 1)[1]
        baseline_sql = baseline_sql.replace("data_month              date NOT NULL", "data_month date")
        baseline_sql = "CREATE TABLE raw_copy_baseline " + baseline_sql.split(") PARTITION BY")[0] + ")"
        copy_sql = f"COPY raw_copy_baseline ({', '.join(repr(c).replace(chr(39), chr(34)) for c in CSV_COLUMNS)}) " \
                   "FROM STDIN (FORMAT csv, HEADER true)"
        pg_url = cfg.warehouse_url().replace("postgresql+psycopg2", "postgresql")
        raw_copy = f"""
import time
import psycopg
with psycopg.connect({pg_url!r}) as conn, conn.cursor() as cur:
    cur.execute("DROP TABLE IF EXISTS raw_copy_baseline")
    cur.execute({baseline_sql!r})
    conn.commit()
    t = time.perf_counter()
    with open({str(csv_path)!r}, "rb") as f, cur.copy({copy_sql!r}) as copy:
        while block := f.read(1 << 20):
            copy.write(block)
    conn.commit()
    print("work_s", time.perf_counter() - t)
"""
        pandas = f'''
import time
import pandas as pd
import sqlalchemy
engine = sqlalchemy.create_engine({cfg.warehouse_url()!r})
rows = 0
with engine.begin() as conn:
    conn.exec_driver_sql("DROP TABLE IF EXISTS pandas_to_sql_baseline")
t = time.perf_counter()
for chunk in pd.read_csv({str(csv_path)!r}, chunksize={PANDAS_CHUNK}, nrows={args.pandas_rows},
                         parse_dates=["tpep_pickup_datetime", "tpep_dropoff_datetime"]):
    chunk.to_sql("pandas_to_sql_baseline", engine, if_exists="append", index=False)
    rows += len(chunk)
print("work_s", time.perf_counter() - t)
'''
        steps = [
            ("raw COPY of the CSV (baseline)", raw_copy),
            ("download (stand-in -> S3)", _call("download_month")),
            ("parquetize (S3 csv.gz -> S3 parquet)", _call("parquetize_month")),
            ("load (S3 parquet -> COPY into partition)", _call("load_month")),
            ("out-of-bounds counts (one scan of the month)", _call("out_of_bounds_counts")),
            (f"pandas to_sql, {PANDAS_CHUNK:,}-row chunks ({args.pandas_rows:,} rows)", pandas),
        ]
        # COPY timings move by +-20% from run to run (checkpoints, page cache): the baseline and the
        # load run --repeat times each, interleaved, and the medians are compared.
        results = [_step(name, code, env) for name, code in steps]
        for _ in range(args.repeat - 1):
            for index in (0, 3):
                again = _step(steps[index][0], steps[index][1], env)
                results[index].setdefault("more", []).append(again)
        for index in (0, 3):
            tries = [results[index], *results[index].pop("more", [])]
            results[index] = {**results[index], "work_s": statistics.median(t["work_s"] for t in tries),
                              "seconds": statistics.median(t["seconds"] for t in tries),
                              "rss_mb": max(t["rss_mb"] for t in tries),
                              "range": (min(t["work_s"] for t in tries), max(t["work_s"] for t in tries))}
        # The same run twice in one process: the first pays Airflow's start-up (import, the
        # in-process execution API: ~4-6 s here), the second runs as in a deployment that is up.
        dag_run = _step("whole DAG run (dag.test, 7 tasks)", f'''
import time
from datetime import datetime, timezone
start = time.perf_counter()
from airflow.models import DagBag
dag = DagBag(dag_folder="{ROOT / 'dags' / 'nyc_taxi_ingestion.py'}").get_dag("nyc_taxi_ingestion")
for label in ("cold", "warm"):
    run = dag.test(logical_date=datetime(2021, 2, 2, 6, tzinfo=timezone.utc))
    assert run.state == "success", run.state
    print("run_s", label, time.perf_counter() - start)
    start = time.perf_counter()
''', env)
    finally:
        stop_all(services)
        shutil.rmtree(state, ignore_errors=True)

    copy_s = results[0]["work_s"]
    load_s = results[3]["work_s"]
    pandas = results[5]
    print(f"\nNYC taxi load benchmark, {args.rows:,} rows, {os.cpu_count()} cores. Each step runs in a fresh "
          "process: 'work s' times the step itself, 'wall s' adds interpreter and import start-up.")
    print(f"{'step':<52} {'work s':>7} {'wall s':>7} {'rows/s':>10} {'peak RSS MB':>12}")
    for r in results[:5]:
        print(f"{r['name']:<52} {r['work_s']:>7.1f} {r['seconds']:>7.1f} {args.rows / r['work_s']:>10,.0f} "
              f"{r['rss_mb']:>12.0f}")
    print(f"{pandas['name']:<52} {pandas['work_s']:>7.1f} {pandas['seconds']:>7.1f} "
          f"{args.pandas_rows / pandas['work_s']:>10,.0f} {pandas['rss_mb']:>12.0f}")
    runs = {line.split()[1]: float(line.split()[2])
            for line in dag_run["out"].splitlines() if line.startswith("run_s ")}
    print(f"{'whole DAG run, new process (dag.test, 7 tasks)':<52} {runs['cold']:>7.1f} {runs['cold']:>7.1f} "
          f"{args.rows / runs['cold']:>10,.0f} {dag_run['rss_mb']:>12.0f}")
    print(f"{'whole DAG run again, Airflow already up':<52} {runs['warm']:>7.1f} {runs['warm']:>7.1f} "
          f"{args.rows / runs['warm']:>10,.0f}")
    print(f"(raw COPY and load: median of {args.repeat} runs; raw COPY {results[0]['range'][0]:.1f}-"
          f"{results[0]['range'][1]:.1f} s, load {results[3]['range'][0]:.1f}-{results[3]['range'][1]:.1f} s)")
    print("\nratios:")
    print(f"  load throughput / raw COPY throughput  = {copy_s / load_s:.2f}x   (target >= 0.8x)")
    print(f"  whole DAG run time / raw COPY time     = {runs['cold'] / copy_s:.2f}x   (target <= 4x; "
          "includes Airflow's start-up)")
    print(f"    run again with Airflow already up    = {runs['warm'] / copy_s:.2f}x")
    pandas_ratio = (args.pandas_rows / pandas["seconds"]) / (args.rows / copy_s)
    print(f"  pandas to_sql throughput / raw COPY    = {pandas_ratio:.2f}x")
    peak = max(r["rss_mb"] for r in results[1:5])
    print(f"  peak RSS of the project's steps        = {peak:.0f} MB   (target <= 300 MB)")
    return 0


def _baseline_table_sql(name: str) -> str:
    """The warehouse table's columns (both versions), as a plain table: what every COPY baseline fills."""
    v1 = (ROOT / "include/sql/yellow_taxi_trips/V1__create_table.sql").read_text()
    body = v1.split("CREATE TABLE IF NOT EXISTS yellow_taxi_trips", 1)[1].split(") PARTITION BY")[0]
    body = body.replace("data_month              date NOT NULL", "data_month date")
    return f"CREATE TABLE {name} {body}, airport_fee double precision, cbd_congestion_fee double precision)"


def _quoted(columns) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _install_extras() -> str | None:
    """pgpq and ADBC into EXTRAS_DIR (once; uv's cache makes it quick): None, or why not."""
    if all((EXTRAS_DIR / name).is_dir() for name in ("pgpq", "adbc_driver_postgresql", "adbc_driver_manager")):
        return None
    uv = Path(sys.executable).with_name("uv")
    command = [str(uv), "pip", "install", "--quiet", "--python", sys.executable, "--target", str(EXTRAS_DIR),
               "--no-deps", *EXTRAS]  # their dependencies (pyarrow, typing-extensions) are the venv's
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(command[:3])}: {exc}"
    return None if done.returncode == 0 else (done.stderr or done.stdout).strip()[-500:]


def _prepare_parquet_month(publisher: Path, month: str, state: Path, half_rows: int) -> dict:
    """From the publisher's file, before anything is timed: the conformed file (the project's
    conform), the same rows as CSV (raw COPY's input) and the first half_rows of them as a parquet
    file like the project's (the load at half the rows)."""
    import pyarrow.csv as pcsv  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    from include.nyc_taxi import ROW_GROUP_ROWS, parquet_schema  # noqa: PLC0415
    from include.tlc_eras import conform_parquet  # noqa: PLC0415

    conformed, csv_path, half = state / "conformed.parquet", state / "month.csv", state / "half.parquet"
    rows = conform_parquet(publisher, conformed, month)
    schema, left = parquet_schema(), half_rows
    with pcsv.CSVWriter(csv_path, schema) as csv_out, \
            pq.ParquetWriter(half, schema, compression="zstd") as half_out:
        for batch in pq.ParquetFile(conformed).iter_batches(batch_size=ROW_GROUP_ROWS):
            csv_out.write_batch(batch)
            if left > 0:
                half_out.write_batch(batch.slice(0, left), row_group_size=ROW_GROUP_ROWS)
                left -= min(left, batch.num_rows)
    return {"rows": rows, "conformed": conformed, "csv": csv_path, "half": half}


def _arrow_copy_code(method: str, pg_url: str, month: str) -> str:
    """pgpq or ADBC: the project's parquet object, read from S3 the way the load reads it, into a
    plain table (raw COPY's), by the library's own Arrow -> binary COPY encoder."""
    table = f"{method}_baseline"
    head = f"""
import time
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from include.arrow_s3 import s3_filesystem
from include.nyc_taxi import BUCKET, BATCH_ROWS, _use_system_allocator, parquet_key
_use_system_allocator()
with psycopg.connect({pg_url!r}) as conn:
    conn.execute("DROP TABLE IF EXISTS {table}")
    conn.execute({_baseline_table_sql(table)!r})
parquet = s3_filesystem("aws_default").open_input_file(f"{{BUCKET}}/{{parquet_key({month!r})}}")
source = pq.ParquetFile(parquet, pre_buffer=True)
def batches():
    for group in range(source.num_row_groups):
        yield from source.read_row_group(group, use_threads=False).to_batches(max_chunksize=BATCH_ROWS)
t = time.perf_counter()
"""
    if method == "pgpq":
        return head + f"""
from pgpq import ArrowToPostgresBinaryEncoder
from psycopg.copy import LibpqWriter
encoder = ArrowToPostgresBinaryEncoder(source.schema_arrow)
with psycopg.connect({pg_url!r}) as conn, conn.cursor() as cur:
    with cur.copy('COPY {table} ({_quoted(COLUMNS)}) FROM STDIN (FORMAT binary)', writer=LibpqWriter(cur)) as copy:
        copy.write(encoder.write_header())
        for batch in batches():
            copy.write(encoder.write_batch(batch))
        copy.write(encoder.finish())
print("work_s", time.perf_counter() - t)
"""
    return head + f"""
import adbc_driver_postgresql.dbapi as adbc
with adbc.connect({pg_url!r}) as conn, conn.cursor() as cur:
    cur.adbc_ingest("{table}", pa.RecordBatchReader.from_batches(source.schema_arrow, batches()), mode="append")
    conn.commit()
print("work_s", time.perf_counter() - t)
"""


def _check_code(month: str, rows: int) -> str:
    """The DAG's two check tasks (include/quality.py) on the staged month, their XCom values given."""
    values = {"month": month, "rows": rows, "staged_table": f"yellow_taxi_trips_{month.replace('-', '_')}_staged"}
    return f"""
import time
from include import quality
values = {values!r}
quality._xcom = lambda task_id, key: str(values[key])
t = time.perf_counter()
for check in quality.taxi_month_checks(load_task_id="load"):
    check.execute({{}})
print("work_s", time.perf_counter() - t)
"""


def _raw_copy_code(pg_url: str, fmt: str, path: Path) -> str:
    options = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT binary"
    return f"""
import time
import psycopg
with psycopg.connect({pg_url!r}) as conn, conn.cursor() as cur:
    cur.execute("DROP TABLE IF EXISTS raw_copy_baseline")
    cur.execute({_baseline_table_sql("raw_copy_baseline")!r})
    conn.commit()
    t = time.perf_counter()
    with open({str(path)!r}, "rb") as f, \\
            cur.copy('COPY raw_copy_baseline ({_quoted(COLUMNS)}) FROM STDIN ({options})') as copy:
        while block := f.read(1 << 20):
            copy.write(block)
    conn.commit()
    print("work_s", time.perf_counter() - t)
"""


def _previous_month(month: str) -> str:
    year, mon = map(int, month.split("-"))
    return f"{year - (mon == 1):04d}-{(mon - 2) % 12 + 1:02d}"


def _median(tries: list[dict]) -> dict:
    return {**tries[0], "work_s": statistics.median(t["work_s"] for t in tries),
            "seconds": statistics.median(t["seconds"] for t in tries), "rss_mb": max(t["rss_mb"] for t in tries),
            "range": (min(t["work_s"] for t in tries), max(t["work_s"] for t in tries))}


def bench_parquet(args) -> int:  # noqa: PLR0915 - one run, step by step
    from datetime import timedelta  # noqa: PLC0415

    from devstack.standins import tlc_publisher  # noqa: PLC0415

    month = args.month or PARQUET_MONTH
    half_month = _previous_month(month)  # the half-size load's parquet key and staged table
    real = tlc_publisher.REAL_ROWS.get(month, tlc_publisher.DEFAULT_ROWS)
    base_rows = args.rows or real
    half_rows = (base_rows + 1) // 2
    state = Path(tempfile.mkdtemp(prefix="nyc-taxi-bench-"))
    cfg = StackConfig.for_tests(state)
    services = []
    skipped: dict[str, str] = {}
    try:
        why = _install_extras()
        if why:
            skipped["pgpq"] = skipped["adbc"] = f"not installable here: {why}"
            print(f"pgpq and ADBC skipped: {why}", flush=True)
        print(f"Starting throwaway Postgres, Redis, S3 and stand-ins in {state}", flush=True)
        services = start_services(cfg)
        env = throwaway_env(cfg)
        migrate_metadata_db(env)
        conn = json.loads(env["AIRFLOW_CONN_NYC_TLC"])
        if not conn.get("extra", {}).get("path", "").endswith(".parquet"):
            raise RuntimeError(f"the nyc_tlc connection does not read the TLC's parquet files: {conn}")
        extras_env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(EXTRAS_DIR)) if p)}

        # The publisher's month, published a day ago by the stand-in's clock, of base_rows trips.
        published = tlc_publisher.publication_time(month)
        settings = {"tlc_rows_per_month": base_rows, "tlc_scale": max(1.0, base_rows / real) * 1.001,
                    "tlc_now": (published + timedelta(days=1)).isoformat()}
        request = urllib.request.Request(f"{cfg.standin_url}/_standin/config", method="POST",  # noqa: S310
                                         data=json.dumps(settings).encode())
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310 - the local stand-in
        publisher = state / "publisher.parquet"
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{cfg.standin_url}/trip-data/yellow_tripdata_{month}.parquet",  # noqa: S310
                                    timeout=1800) as resp, publisher.open("wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
        generated = time.perf_counter() - t0
        t0 = time.perf_counter()
        prepared = _prepare_parquet_month(publisher, month, state, half_rows)
        rows = prepared["rows"]
        print(f"The stand-in generated {month}: {rows:,} rows ({base_rows:,} + {rows - base_rows} pickups outside "
              f"the month), {publisher.stat().st_size / 1e6:.0f} MB parquet, in {generated:.0f}s; conformed, "
              f"{prepared['csv'].stat().st_size / 1e6:.0f} MB CSV and a {half_rows:,}-row half in "
              f"{time.perf_counter() - t0:.0f}s", flush=True)

        pg_url = cfg.warehouse_url().replace("postgresql+psycopg2", "postgresql")
        binary_path = state / "month.pgcopy"
        columns = _quoted(COLUMNS)
        # The same rows in Postgres' own binary COPY format: loaded from the CSV once, dumped (not timed).
        _step("prepare the binary COPY file", f"""
import psycopg
with psycopg.connect({pg_url!r}) as conn, conn.cursor() as cur:
    cur.execute("DROP TABLE IF EXISTS raw_copy_baseline")
    cur.execute({_baseline_table_sql("raw_copy_baseline")!r})
    with open({str(prepared["csv"])!r}, "rb") as f, \\
            cur.copy('COPY raw_copy_baseline ({columns}) FROM STDIN (FORMAT csv, HEADER true)') as copy:
        while block := f.read(1 << 20):
            copy.write(block)
    with open({str(binary_path)!r}, "wb") as f, \\
            cur.copy('COPY raw_copy_baseline ({columns}) TO STDOUT (FORMAT binary)') as copy:
        for block in copy:
            f.write(block)
""", env)
        _step("upload the half-size parquet", f"""
from pathlib import Path
from include.arrow_s3 import s3_filesystem, upload_file
from include.nyc_taxi import BUCKET, parquet_key
upload_file(s3_filesystem("aws_default"), Path({str(prepared["half"])!r}), BUCKET, parquet_key({half_month!r}))
""", env)
        print("Timing the steps", flush=True)
        download = _step("download (stand-in -> S3)", f"""
import json, time
from include.nyc_taxi import download_month_with_source
t = time.perf_counter()
downloaded = download_month_with_source({month!r})
print("work_s", time.perf_counter() - t)
print("out", json.dumps(downloaded))
""", env)
        downloaded = _out(download)
        steps = {
            "download": download,
            "conform": _step("conform (S3 publisher parquet -> S3 parquet)",
                             _call("parquetize_month", month, downloaded["key"]), env),
        }
        # COPY timings move by +-20% from run to run (checkpoints, page cache): the baselines and the
        # load run --repeat times each, interleaved, and the medians are compared.
        timed = {
            "raw_binary": ("raw COPY of the rows, binary file", _raw_copy_code(pg_url, "binary", binary_path), env),
            "raw_csv": ("raw COPY of the rows, CSV file", _raw_copy_code(pg_url, "csv", prepared["csv"]), env),
            "load": ("load (S3 parquet -> binary COPY, staged)", _call("stage_month", month), env),
            "pgpq": ("pgpq (S3 parquet -> pgpq's binary COPY)", _arrow_copy_code("pgpq", pg_url, month), extras_env),
            "adbc": ("ADBC adbc_ingest (S3 parquet -> COPY)", _arrow_copy_code("adbc", pg_url, month), extras_env),
        }
        tries: dict[str, list[dict]] = {key: [] for key in timed}
        for _ in range(args.repeat):
            for key, (name, code, step_env) in timed.items():
                if key in skipped:
                    continue
                try:
                    tries[key].append(_step(name, code, step_env))
                except RuntimeError as exc:
                    if key not in ("pgpq", "adbc"):
                        raise
                    skipped[key] = "failed: " + str(exc).strip().splitlines()[-1][:300]
                    print(f"{name} {skipped[key]}", flush=True)
        steps.update({key: _median(tries[key]) for key in timed if tries[key] and key not in skipped})
        steps["checks"] = _step("checks (the DAG's 2 check tasks, staged month)", _check_code(month, rows), env)
        steps["publish"] = _step("publish (swap in, record the file, out-of-bounds)", f"""
import time
from include.nyc_taxi import out_of_bounds_counts, publish_month
t = time.perf_counter()
publish_month({month!r}, source={{**{downloaded["source"]!r}, "rows": {rows}}})
out_of_bounds_counts({month!r})
print("work_s", time.perf_counter() - t)
""", env)
        steps["load_half"] = _median([_step(f"load at half the rows ({half_rows:,})", _call("stage_month", half_month),
                                            env) for _ in range(max(1, args.repeat - 1))])
        # The same run twice in one process: the first pays Airflow's start-up (import, the
        # in-process execution API), the second runs as in a deployment that is up.
        year, mon = map(int, month.split("-"))
        dag_run = _step("whole DAG run (dag.test, 7 tasks)", f"""
import time
from datetime import datetime, timezone
start = time.perf_counter()
from airflow.models import DagBag
dag = DagBag(dag_folder="{ROOT / 'dags' / 'nyc_taxi_ingestion.py'}").get_dag("nyc_taxi_ingestion")
for label in ("cold", "warm"):
    run = dag.test(logical_date=datetime({year + mon // 12}, {mon % 12 + 1}, 2, 6, tzinfo=timezone.utc))
    assert run.state == "success", run.state
    print("run_s", label, time.perf_counter() - start)
    start = time.perf_counter()
""", env)
    finally:
        stop_all(services)
        shutil.rmtree(state, ignore_errors=True)

    _report_parquet(args, month, rows, half_rows, steps, dag_run, skipped)
    return 0


NAMES = {"pgpq": "pgpq", "adbc": "ADBC adbc_ingest"}


def _report_parquet(args, month, rows, half_rows, steps, dag_run, skipped) -> None:
    print(f"\nNYC taxi load benchmark, the TLC publisher's {month}, {rows:,} rows, {os.cpu_count()} cores. Each "
          "step runs in a fresh process: 'work s' times the step itself, 'wall s' adds interpreter and import "
          "start-up.")
    print(f"{'step':<58} {'work s':>7} {'wall s':>7} {'rows/s':>10} {'peak RSS MB':>12}")
    for key in ("raw_binary", "raw_csv", "pgpq", "adbc", "download", "conform", "load", "checks", "publish",
                "load_half"):
        if key not in steps:
            print(f"{NAMES.get(key, key):<58} skipped: {skipped.get(key, '?')}")
            continue
        r = steps[key]
        n = half_rows if key == "load_half" else rows
        print(f"{r['name']:<58} {r['work_s']:>7.1f} {r['seconds']:>7.1f} {n / r['work_s']:>10,.0f} "
              f"{r['rss_mb']:>12.0f}")
    runs = {line.split()[1]: float(line.split()[2])
            for line in dag_run["out"].splitlines() if line.startswith("run_s ")}
    print(f"{'whole DAG run, new process (dag.test, 7 tasks)':<58} {runs['cold']:>7.1f} {runs['cold']:>7.1f} "
          f"{rows / runs['cold']:>10,.0f} {dag_run['rss_mb']:>12.0f}")
    print(f"{'whole DAG run again, Airflow already up':<58} {runs['warm']:>7.1f} {runs['warm']:>7.1f} "
          f"{rows / runs['warm']:>10,.0f}")
    ranges = ", ".join(f"{key} {steps[key]['range'][0]:.1f}-{steps[key]['range'][1]:.1f} s"
                       for key in ("raw_binary", "raw_csv", "pgpq", "adbc", "load", "load_half") if key in steps)
    print(f"(medians of {args.repeat} runs, the half load of {max(1, args.repeat - 1)}: {ranges})")
    load = steps["load"]["work_s"]
    print("\nratios (throughput: the load's rows/s over the other's; above 1 the load is faster):")
    for key, label in (("raw_binary", "raw binary COPY"), ("raw_csv", "raw CSV COPY"), ("pgpq", "pgpq"),
                       ("adbc", "ADBC adbc_ingest")):
        if key in steps:
            target = "   (target >= 0.8x)" if key.startswith("raw") else ""
            print(f"  load / {label:<18} = {steps[key]['work_s'] / load:.2f}x{target}")
        else:
            print(f"  load / {label:<18} = -   ({skipped.get(key, 'skipped')})")
    for key, label in (("raw_binary", "raw binary COPY"), ("raw_csv", "raw CSV COPY")):
        copy_s = steps[key]["work_s"]
        print(f"  whole DAG run / {label:<15} = {runs['cold'] / copy_s:.2f}x new process (target <= 4x), "
              f"{runs['warm'] / copy_s:.2f}x Airflow already up")
    project = ("download", "conform", "load", "checks", "publish")
    peak = max(project, key=lambda k: steps[k]["rss_mb"])
    print("  peak RSS per step: " + ", ".join(f"{k} {steps[k]['rss_mb']:.0f} MB" for k in project)
          + f"; highest {peak} (target <= 300 MB)")
    print(f"  load peak RSS at {rows:,} vs {half_rows:,} rows = {steps['load']['rss_mb']:.0f} MB vs "
          f"{steps['load_half']['rss_mb']:.0f} MB ({steps['load']['rss_mb'] - steps['load_half']['rss_mb']:+.0f} MB "
          "for twice the rows)")



if __name__ == "__main__":
    sys.exit(main())
