"""Daily New York min/max temperature for January 2025, gathered by weekly catch-up runs
(lab 12, exercise 2). Every January date lands exactly once."""

from datetime import UTC, datetime

from airflow.sdk import Param, dag, task

from include.assets import WEATHER_DAILY_CSV
from include.dag_defaults import DEFAULT_ARGS
from include.daily_weather import (
    WEEK_STARTS,
    fetch_interval_temperature_range,
    interval_key,
    week_of_run,
    weekly_timetable,
    write_interval_csv_to_s3,
)


@dag(
    dag_id="backfilling_dataset_gathering",
    # Runs at 2025-01-01, -08, -15, -22, -29 (00:00 UTC), each for the 7 days from its logical date:
    # consecutive weeks touch, never overlap. No end_date (see weekly_timetable); start_date only
    # bounds the logical date of a manual run - the historical-forecast API starts in 2022.
    schedule=weekly_timetable(),
    start_date=datetime(2022, 1, 1, tzinfo=UTC),
    catchup=True,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    params={"week_start": Param(None, type=["null", "string"], enum=[None, *WEEK_STARTS],
                                description="Week to gather again (its first day). Empty: the week starting at "
                                            "the run's logical date, as scheduled and backfilled runs do.")},
    tags=["weather", "open-meteo", "backfill", "s3", "lab12"],
    doc_md="""
### Weekly backfill of daily temperature range
Five runs with catch-up, one per 7 days from 2025-01-01 (logical dates Jan 1, 8, 15, 22, 29); the
last reaches into February. Each run gathers the 7 New York calendar days from its logical date:
the Open-Meteo historical-forecast API's (`open_meteo_forecast`) hourly temperatures in GMT,
grouped by New York day (DST-aware: 23- and 25-hour days) into min and max, written to
`s3://weather-data/daily_temperature_range/<first day>_<last day>.csv`. Together the runs cover
every January date exactly once, with the same values whenever they are fetched. Each CSV written
emits an event of the asset `weather_data.daily_temperature_range` (extra: key, first and last day,
rows, the run's data interval).
**Trigger**: pick the week in the `week_start` param; a manual run for any other date fails,
saying how to run it. Re-run or backfill weeks:
`airflow backfill create --dag-id backfilling_dataset_gathering --from-date 2025-01-01 --to-date 2025-01-31`.
""",
)
def backfilling_dataset_gathering():
    @task
    def extract_daily_temperature_range(logical_date=None, params=None):
        return fetch_interval_temperature_range(*week_of_run(logical_date, params["week_start"]))

    @task(outlets=[WEATHER_DAILY_CSV])
    def load_daily_csv_to_s3(daily: dict, data_interval_start=None, data_interval_end=None,
                             outlet_events=None) -> str:
        uri = write_interval_csv_to_s3(daily)
        outlet_events[WEATHER_DAILY_CSV].extra = {
            "key": interval_key(daily), "first_day": daily["first_day"], "last_day": daily["last_day"],
            "rows": len(daily["date"]),
            "data_interval_start": data_interval_start.isoformat() if data_interval_start else None,
            "data_interval_end": data_interval_end.isoformat() if data_interval_end else None,
        }
        return uri

    load_daily_csv_to_s3(extract_daily_temperature_range())


backfilling_dataset_gathering()
