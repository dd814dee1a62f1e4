"""Weekly NYC yellow-taxi demand forecast from the weather as forecast (lab 12's ML pipeline): every
Saturday 06:00 New York, train on the daily history known then, forecast the next 7 New York days,
publish only a model that beats the seasonal-naive baseline; score past forecasts whenever
taxi_daily_weather receives actuals."""

import os
from datetime import datetime

import pendulum
from airflow.sdk import dag, task
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

from include.assets import (
    TAXI_DAILY_WEATHER,
    TAXI_DEMAND_FORECAST,
    TAXI_DEMAND_FORECAST_ACCURACY,
    TAXI_DEMAND_MODEL,
    TAXI_DEMAND_REPORTS,
)
from include.dag_defaults import DEFAULT_ARGS

NEW_YORK = pendulum.timezone("America/New_York")  # Airflow serializes pendulum time zones only
# First issue of the catch-up (a backtest of every week since): NYC_TAXI_FORECAST_START, default the first
# Saturday with a year of congestion-pricing-era history behind the ~2-month publication gap.
FIRST_ISSUE = datetime.fromisoformat(os.environ.get("NYC_TAXI_FORECAST_START") or "2026-07-04").replace(
    hour=6, tzinfo=NEW_YORK)


@dag(
    dag_id="nyc_taxi_demand_forecast",
    # Saturday 06:00 New York (the issue instant), and besides the clock a run whenever taxi_daily_weather
    # gets a month: that run only scores (actuals arrived), it issues nothing.
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 6 * * 6", timezone=NEW_YORK),
                                 assets=[TAXI_DAILY_WEATHER]),
    start_date=FIRST_ISSUE,
    catchup=True,
    max_active_runs=1,  # weeks in order: each gate compares with the model published the week before
    default_args=DEFAULT_ARGS,
    tags=["nyc-taxi", "ml", "weather", "postgres", "s3", "assets"],
    doc_md="""
### NYC taxi demand forecast
Each Saturday 06:00 New York (the run's logical date is the **issue instant**; catch-up from
`NYC_TAXI_FORECAST_START` backfills past weeks as a backtest):
1. `wait_for_history` - the daily history must be current for the issue: its newest day known at the
   issue instant no older than 95 days (the TLC publishes a month about two months after it ends);
   a fresh deployment's catch-up waits here (rescheduled, no slot held) while the taxi months load;
2. `extract_weather_forecast` - the 7 New York days after the issue date, weather **as forecast at
   the issue instant**: Open-Meteo's Previous Model Runs API for past issues, the forecast API for
   the current one (include/weather_forecasts.py: no run after the issue instant is ever used);
3. `train_model` - ridge regression on log trips (weekday, US/NY holidays, season, trend, weather) on
   the `taxi_daily_weather` days known at the issue instant (before the issue date, of months the TLC
   had published), a rolling backtest with the issue's publication gap against the seasonal-naive
   baseline, and the **gate**: published only when its backtest MAPE <= 0.95 x the baseline's and
   <= the previous published model's + 2 points; otherwise the task fails naming both errors, nothing
   is stored, the previous forecast stands. Published: `s3://models/nyc_taxi_demand/<model_version>/`
   (`model.pkl`, `model_card.json`);
4. `load_forecast` - 7 rows into `taxi_demand_forecast` (key `issued_on`, `day`; replaced on re-run),
   with the baseline as issued.
Every run (and every run triggered by `taxi_daily_weather`) also `score_forecasts`: each forecast
with actuals not yet scored gets MAE, MAPE, the baseline's MAPE and the MAPE it would have had with the
observed weather in `taxi_demand_forecast_accuracy`, and a chart
`s3://weather-data/reports/nyc_taxi_demand/<issued_on>.svg`. Same inputs, same model bytes and rows.
""",
)
def nyc_taxi_demand_forecast():
    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def is_issue_run(dag_run=None) -> bool:
        """A run of the clock (scheduled, backfill, manual with a logical date) issues a forecast; one
        triggered by taxi_daily_weather only scores."""
        return dag_run.run_type != "asset_triggered" and dag_run.logical_date is not None

    @task.sensor(poke_interval=60, timeout=6 * 3600, mode="reschedule")
    def wait_for_history(logical_date=None):
        from airflow.sdk import PokeReturnValue  # noqa: PLC0415

        from include.demand_pipeline import history_is_current, issue_of  # noqa: PLC0415

        instant, issued_on = issue_of(logical_date)
        current, newest = history_is_current(instant, issued_on)
        print(f"history known at {instant.isoformat()}: newest day {newest}")
        return PokeReturnValue(is_done=current)

    @task
    def extract_weather_forecast(logical_date=None) -> list[dict]:
        from include.demand_pipeline import extract_weather_forecast as extract  # noqa: PLC0415
        from include.demand_pipeline import issue_of  # noqa: PLC0415

        return extract(*issue_of(logical_date))

    @task(outlets=[TAXI_DEMAND_MODEL])
    def train_model(logical_date=None, outlet_events=None) -> dict:
        from include.demand_pipeline import issue_of, train_and_gate  # noqa: PLC0415

        published = train_and_gate(*issue_of(logical_date))
        outlet_events[TAXI_DEMAND_MODEL].extra = published
        return published

    @task(outlets=[TAXI_DEMAND_FORECAST])
    def load_forecast(model: dict, weather: list[dict], logical_date=None, outlet_events=None) -> dict:
        from include.demand_pipeline import issue_of  # noqa: PLC0415
        from include.demand_pipeline import load_forecast as load  # noqa: PLC0415

        instant, issued_on = issue_of(logical_date)
        stored = load(instant, issued_on, model["model_version"], weather)
        outlet_events[TAXI_DEMAND_FORECAST].extra = {**stored, "backtest_mape": model["backtest_mape"],
                                                     "baseline_mape": model["baseline_mape"]}
        return stored

    # On its own (no upstream): it runs in every run - an issue whose gate fails still scores, and the run
    # still fails on that gate (a leaf downstream of it would hide the failure).
    @task(outlets=[TAXI_DEMAND_FORECAST_ACCURACY, TAXI_DEMAND_REPORTS])
    def score_forecasts(outlet_events=None) -> list[dict]:
        from include.demand_pipeline import score_forecasts as score  # noqa: PLC0415

        scored = score()
        summary = {"issues": [s["issued_on"] for s in scored],
                   "scores": {s["issued_on"]: {k: s[k] for k in ("model_version", "days_scored", "mape",
                                                                 "baseline_mape", "mape_observed_weather")}
                              for s in scored}}
        outlet_events[TAXI_DEMAND_FORECAST_ACCURACY].extra = summary
        outlet_events[TAXI_DEMAND_REPORTS].extra = {"keys": [f"reports/nyc_taxi_demand/{i}.svg"
                                                             for i in summary["issues"]]}
        return scored

    issue = is_issue_run()
    waited = wait_for_history()
    weather = extract_weather_forecast()
    model = train_model()
    issue >> waited >> [weather, model]
    load_forecast(model, weather)
    score_forecasts()


nyc_taxi_demand_forecast()
