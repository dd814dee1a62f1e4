"""Daily New York min/max temperature for January 2025, gathered by weekly catch-up runs
(lab 12, exercise 2). Every January date lands exactly once."""

from datetime import UTC, datetime, timedelta

from airflow.sdk import DeltaDataIntervalTimetable, dag, task

from include.dag_defaults import DEFAULT_ARGS
from include.daily_weather import fetch_interval_temperature_range, write_interval_csv_to_s3


@dag(
    dag_id="backfilling_dataset_gathering",
    # Data intervals [start, start + 7 days): consecutive runs touch, never overlap.
    schedule=DeltaDataIntervalTimetable(timedelta(days=7)),
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    end_date=datetime(2025, 1, 31, tzinfo=UTC),
    catchup=True,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    tags=["weather", "open-meteo", "backfill", "s3", "lab12"],
    doc_md="""
### Weekly backfill of daily temperature range
Runs every 7 days from 2025-01-01 with catch-up; the last run (logical date 2025-01-29) reaches
into February. Each run asks the Open-Meteo historical-forecast API (`open_meteo_forecast`) for
daily `temperature_2m_min/max` in New York (timezone America/New_York) for exactly the days of its
data interval - first day included, last excluded - and writes
`s3://weather-data/daily_temperature_range/<first day>_<last day>.csv`. Together the runs cover
every January date exactly once. Re-run or backfill any week:
`airflow backfill create --dag-id backfilling_dataset_gathering --from-date 2025-01-01 --to-date 2025-01-31`.
""",
)
def backfilling_dataset_gathering():
    @task
    def extract_daily_temperature_range(data_interval_start=None, data_interval_end=None):
        return fetch_interval_temperature_range(data_interval_start, data_interval_end)

    @task
    def load_daily_csv_to_s3(daily: dict) -> str:
        return write_interval_csv_to_s3(daily)

    load_daily_csv_to_s3(extract_daily_temperature_range())


backfilling_dataset_gathering()
