"""NYC taxi demand against the weather, one row per New York day: scheduled on the yellow_taxi_trips
asset - every month nyc_taxi_ingestion loads is aggregated per day, joined with that day's hourly
temperature and precipitation from the Open-Meteo archive, stored in taxi_daily_weather and charted."""

from datetime import UTC, datetime

from airflow.sdk import Param, dag, task

from include.assets import TAXI_DAILY_WEATHER, TAXI_WEATHER_REPORTS, YELLOW_TAXI_TRIPS
from include.dag_defaults import DEFAULT_ARGS
from include.nyc_taxi import MONTH_PATTERN


@dag(
    dag_id="nyc_taxi_daily_weather",
    schedule=[YELLOW_TAXI_TRIPS],  # a run whenever a month of trips is (re)loaded - not on a clock
    # Asset-triggered runs: catchup=True makes a run take every event since the previous asset-triggered
    # run (with False, events from before the DAG first scheduled on the asset would be skipped).
    catchup=True,
    start_date=datetime(2021, 1, 1, tzinfo=UTC),  # required with catchup; asset-triggered runs have no logical date
    max_active_runs=1,  # builds of the same month never overlap; queued loads wait and are taken together
    default_args=DEFAULT_ARGS,
    params={"month": Param(None, type=["null", "string"], pattern=MONTH_PATTERN,
                           description="Month to build, YYYY-MM (e.g. 2021-03), for a manual run. Empty: the "
                                       "months named by the yellow_taxi_trips asset events that triggered the run.")},
    tags=["nyc-taxi", "weather", "postgres", "s3", "assets"],
    doc_md="""
### NYC taxi trips and the weather, per New York day
Runs when `yellow_taxi_trips` is updated: each load by `nyc_taxi_ingestion` emits an asset event
naming its month (extra `{"month": "YYYY-MM"}`). A run builds every month its events name - several
when loads queued up - and those of events that arrived since (Airflow 3.3 leaves them waiting for
yet another event, apache/airflow#56050). **Trigger** with the `month` param to rebuild one month.
1. `months_to_build` reads the triggering events (and the `month` param);
2. `build_month` (one mapped task per month) asks the `open_meteo_archive` connection for the month's
   hourly `temperature_2m` and `precipitation` in GMT, groups them by New York day (zoneinfo: 23 and 25
   hours on DST days; precipitation is a sum of the preceding hour), aggregates the month's trips per
   pickup day (New York wall-clock time; pickups outside the month are not counted) and replaces the
   month's days in `taxi_daily_weather` (key `day`) in one transaction;
3. `render_chart` draws daily trips against the daily mean temperature to
   `s3://weather-data/reports/taxi_daily_weather/<YYYY-MM>.svg`.
Outlets: the `taxi_daily_weather` table and the reports, each event with extra `month`, `rows`.
""",
)
def nyc_taxi_daily_weather():
    @task(inlets=[YELLOW_TAXI_TRIPS])
    def months_to_build(triggering_asset_events=None, inlet_events=None, params=None) -> list[str]:
        from include.taxi_weather import months_of_run  # noqa: PLC0415

        if params["month"]:
            return months_of_run([], month=params["month"])
        triggering = list((triggering_asset_events or {}).get(YELLOW_TAXI_TRIPS, []))
        later = []
        if triggering:
            newest = max(event.timestamp for event in triggering)
            later = [event for event in inlet_events[YELLOW_TAXI_TRIPS].after(newest) if event.timestamp > newest]
        return months_of_run(triggering, later)

    @task(outlets=[TAXI_DAILY_WEATHER], map_index_template="{{ task.op_kwargs['month'] }}")
    def build_month(month: str, outlet_events=None) -> dict:
        from include.taxi_weather import build_month as build  # noqa: PLC0415

        rows = build(month)
        outlet_events[TAXI_DAILY_WEATHER].extra = {"month": month, "rows": rows}
        return {"month": month, "rows": rows}

    @task(outlets=[TAXI_WEATHER_REPORTS], map_index_template="{{ task.op_kwargs['built']['month'] }}")
    def render_chart(built: dict, outlet_events=None) -> dict:
        from include.taxi_weather import render_month_chart  # noqa: PLC0415

        report = render_month_chart(built["month"])
        outlet_events[TAXI_WEATHER_REPORTS].extra = report
        return report

    render_chart.expand(built=build_month.expand(month=months_to_build()))


nyc_taxi_daily_weather()
