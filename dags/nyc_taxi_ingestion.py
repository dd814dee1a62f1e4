"""NYC yellow-taxi trips, one month per run with catch-up from 2021-01: download -> parquet ->
S3 -> bulk COPY into Postgres -> check (zoomcamp week 2, with S3 + Postgres for GCS + BigQuery)."""

import os
from datetime import UTC, datetime

from airflow.sdk import CronDataIntervalTimetable, dag, task

from include.dag_defaults import DEFAULT_ARGS
from include.nyc_taxi import check_month, download_month, load_month, month_of, parquetize_month

# Last month to ingest (YYYY-MM): NYC_TAXI_END_MONTH, default the course's 2021-07.
END_MONTH = os.environ.get("NYC_TAXI_END_MONTH", "2021-07")


@dag(
    dag_id="nyc_taxi_ingestion",
    schedule=CronDataIntervalTimetable("0 6 2 * *", timezone="UTC"),  # the 2nd of each month, 06:00
    start_date=datetime(2021, 1, 2, 6, tzinfo=UTC),
    end_date=datetime.strptime(END_MONTH, "%Y-%m").replace(day=2, hour=6, tzinfo=UTC),
    catchup=True,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    tags=["nyc-taxi", "s3", "postgres", "zoomcamp"],
    doc_md="""
### NYC taxi ingestion
One run per month (the month of the run's data interval start), 2021-01 to `NYC_TAXI_END_MONTH`
(default 2021-07), with catch-up:
1. `download_month` streams the month's CSV.gz from the `nyc_tlc` connection to
   `s3://nyc-tlc/raw/yellow_tripdata_<YYYY-MM>.csv.gz`; a month not published yet (404) is
   *skipped* - the run shows it, and a later catch-up or clear retries;
2. `parquetize_month` converts it in bounded pyarrow batches with the TLC column types to
   `s3://nyc-tlc/parquet/yellow_tripdata_<YYYY-MM>.parquet`;
3. `load_month` replaces the month's partition of `yellow_taxi_trips` with Postgres `COPY`, in one
   transaction;
4. `check_month` compares row counts with the parquet file and looks for NULL pickup times.
A broken file (truncated gzip, missing column, non-numeric value) fails with a message naming the
problem and leaves the warehouse month as it was.
""",
)
def nyc_taxi_ingestion():
    # Every task derives the month from its run's data interval: keys are then fixed by the month,
    # and a task can be cleared and re-run on its own.
    @task
    def download(data_interval_start=None) -> str:
        return download_month(month_of(data_interval_start))

    @task
    def parquetize(raw_key: str, data_interval_start=None) -> str:
        return parquetize_month(month_of(data_interval_start))

    @task
    def load(parquet_key: str, data_interval_start=None) -> int:
        return load_month(month_of(data_interval_start))

    @task
    def check(loaded: int, data_interval_start=None) -> int:
        return check_month(month_of(data_interval_start))

    check(load(parquetize(download())))


nyc_taxi_ingestion()
