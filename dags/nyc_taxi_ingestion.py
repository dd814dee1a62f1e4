"""NYC yellow-taxi trips from their publisher, the TLC, one month per run with catch-up from 2025-01
and no end: wait for the month's file (deferred) -> download -> conform -> S3 -> bulk COPY into
Postgres -> data-quality checks -> asset event (zoomcamp week 2, with S3 + Postgres for GCS +
BigQuery; lab 12's event-based scheduling)."""

import os
from datetime import UTC, datetime

from airflow.sdk import Param, dag, task

from include.assets import TLC_PARQUET, TLC_RAW_CSV, YELLOW_TAXI_TRIPS
from include.dag_defaults import DEFAULT_ARGS
from include.nyc_taxi import (
    FIRST_MONTH,
    MONTH_PATTERN,
    download_month_with_source,
    loaded_source,
    month_of_run,
    monthly_timetable,
    out_of_bounds_counts,
    parquet_row_count,
    parquetize_month,
    publish_month,
    republication,
    stage_month,
    staged_table,
)
from include.quality import taxi_month_checks
from include.tlc_publication import TlcMonthPublishedSensor

# The catch-up window: NYC_TAXI_START_MONTH (default 2025-01: include/nyc_taxi.py FIRST_MONTH says why)
# to NYC_TAXI_END_MONTH, by default none - every month up to the latest, each waiting for its file.
START_MONTH = os.environ.get("NYC_TAXI_START_MONTH") or FIRST_MONTH
END_MONTH = os.environ.get("NYC_TAXI_END_MONTH") or None


@dag(
    dag_id="nyc_taxi_ingestion",
    schedule=monthly_timetable(START_MONTH, END_MONTH),  # the 2nd of each month, 06:00 UTC
    # No end_date: the schedule ends with its last month. start_date only bounds the logical date a
    # manual run may carry (Airflow gives a run before it no tasks); TLC's records start in 2009.
    start_date=datetime(2009, 1, 1, tzinfo=UTC),
    catchup=True,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    params={"month": Param(None, type=["null", "string"], pattern=MONTH_PATTERN,
                           description="Month to load, YYYY-MM (e.g. 2021-03). Empty: the month before the run's "
                                       "logical date, which is what each scheduled run loads.")},
    tags=["nyc-taxi", "s3", "postgres", "zoomcamp"],
    doc_md="""
### NYC taxi ingestion
One run per month from `NYC_TAXI_START_MONTH` (default 2025-01, the congestion-pricing era) with
catch-up and no end date (`NYC_TAXI_END_MONTH` sets one), each on the 2nd of the next month at
06:00 UTC. A run loads the month before its logical date; **Trigger** with the `month` param
(YYYY-MM, 2019-01 on) to load any month again. Source: the `nyc_tlc` connection's path template -
the TLC's parquet files by default, the course's CSV.gz mirror (2019-01 to 2021-07) when it ends
in `.csv.gz`.
0. `wait_for_publication` (TLC's parquet source): the TLC publishes a month during the second month
   after it; until then its URL answers 403. The task defers to a trigger that polls the file's
   HEAD with backoff (10 min doubling to 6 h) in the triggerer - no worker slot is held - and
   resumes once it answers 200; it fails at the month's deadline, 120 days after the month ends.
   The frozen course mirror has nothing to wait for: the task passes at once;
1. `download_month` streams the month's file from the `nyc_tlc` connection to
   `s3://nyc-tlc/raw/yellow_tripdata_<YYYY-MM>.csv.gz` - or `.parquet` when the connection's path
   template ends in `.parquet` (the TLC's own files, 2019-01 on, instead of the course's CSV
   mirror); a month not published (404; the TLC's CloudFront answers 403) *skips* a scheduled run
   and *fails* a manual one (it loaded nothing);
2. `parquetize_month` converts it in bounded pyarrow batches with the TLC column types (the TLC's
   parquet: conformed from its schema era, include/tlc_eras.py) to
   `s3://nyc-tlc/parquet/yellow_tripdata_<YYYY-MM>.parquet`;
3. `load` copies it with Postgres `COPY` into the staged table `yellow_taxi_trips_<YYYY_MM>_staged`
   (committed; the table itself is untouched);
4. `check_columns` / `check_table` (common-sql check operators, on the staged month): the row
   count equals the parquet file's, no trip without pickup/dropoff time or zone, the
   `cbd_congestion_fee` of its era (NULL before 2025-01, never charged before 2025-01-05, charged
   on some trips from then on), and no
   plausibility bound (fare, distance, duration, pickup in the month) broken by more than 5% of
   the trips - fewer are real TLC data, kept and counted;
5. `publish` - only when every check passed - swaps the staged month in for the month's partition
   of `yellow_taxi_trips` (one short transaction: readers see the old month until it commits) and
   emits the `yellow_taxi_trips` asset event (month, rows, out-of-bounds counts, the file's ETag and
   Last-Modified, and `republished`: the versions before and now when this load replaced a month
   the TLC republished). The file version is recorded in `tlc_loaded_files` in the same
   transaction; `nyc_taxi_republication_watch` re-runs a month whose file changed since. A month
   that fails a check never reaches the table, and nothing scheduled on it runs.
Each of `download` and `parquetize` emits its S3 object's asset event (`nyc_tlc.raw`,
`nyc_tlc.parquet`). A broken file (truncated gzip or parquet, missing or unknown column, non-numeric
value) fails with a message naming the problem and leaves the warehouse month as it was.
""",
)
def nyc_taxi_ingestion():
    # Every task derives the month from its run (param, else logical date): keys are then fixed by
    # the month, and a task can be cleared and re-run on its own.
    @task(outlets=[TLC_RAW_CSV])
    def download(logical_date=None, params=None, dag_run=None, outlet_events=None) -> dict:
        month = month_of_run(logical_date, params["month"])
        downloaded = download_month_with_source(month, manual=dag_run.run_type == "manual")
        # Against the version the warehouse holds: a republished month says so in its events.
        downloaded["republished"] = republication(loaded_source(month), downloaded["source"])
        outlet_events[TLC_RAW_CSV].extra = {"month": month, "key": downloaded["key"],
                                            "etag": downloaded["source"]["etag"],
                                            "republished": downloaded["republished"] is not None}
        return downloaded

    @task(outlets=[TLC_PARQUET])
    def parquetize(downloaded: dict, logical_date=None, params=None, outlet_events=None) -> str:
        month = month_of_run(logical_date, params["month"])
        key = parquetize_month(month, downloaded["key"])
        outlet_events[TLC_PARQUET].extra = {"month": month, "key": key, "rows": parquet_row_count(month)}
        return key

    @task
    def load(parquet_key: str, logical_date=None, params=None) -> dict:
        month = month_of_run(logical_date, params["month"])
        copied = stage_month(month)
        # The checks compare the staged month with the source object's own count, not with ours.
        return {"month": month, "parquet_key": parquet_key, "rows": parquet_row_count(month), "copied": copied,
                "staged_table": staged_table(month)}

    @task(outlets=[YELLOW_TAXI_TRIPS])
    def publish(loaded: dict, downloaded: dict, data_interval_start=None, data_interval_end=None,
                outlet_events=None) -> dict:
        source = {**downloaded["source"], "rows": loaded["rows"]}
        publish_month(loaded["month"], source=source)
        extra = {
            "month": loaded["month"], "rows": loaded["rows"], "parquet_key": loaded["parquet_key"],
            "out_of_bounds": out_of_bounds_counts(loaded["month"]),
            "source": {key: source[key] for key in ("url", "etag", "last_modified")},
            # None, or the file versions before and now: this load replaced a month the TLC republished.
            "republished": downloaded["republished"],
            "data_interval_start": data_interval_start.isoformat() if data_interval_start else None,
            "data_interval_end": data_interval_end.isoformat() if data_interval_end else None,
        }
        outlet_events[YELLOW_TAXI_TRIPS].extra = extra
        return extra

    wait_for_publication = TlcMonthPublishedSensor(
        task_id="wait_for_publication",
        doc_md="Deferred (in the triggerer, no worker slot) until the month's file answers its HEAD, up to "
               "its deadline; see include/tlc_publication.py. Passes at once for the course mirror.")
    downloaded = download()
    wait_for_publication >> downloaded
    loaded = load(parquetize(downloaded))
    check_columns, check_table = taxi_month_checks(load_task_id="load")
    loaded >> [check_columns, check_table] >> publish(loaded, downloaded)


nyc_taxi_ingestion()
