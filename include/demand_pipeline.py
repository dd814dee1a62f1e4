"""The steps of nyc_taxi_demand_forecast, one function per task (the model itself: include/demand_forecast.py;
the weather as forecast at issue time: include/weather_forecasts.py).

A run's issue instant is its logical date: Saturday 06:00 America/New_York (CronTriggerTimetable), so a
backfilled week is issued exactly as it would have been that Saturday - the history it trains on is what
existed then (days before the issue date of months whose TLC file was out: history_known_at.sql), the
weather is what was forecast then. Each step derives everything from the issue instant: a re-run gives the
same model bytes, version, S3 objects and rows.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from zoneinfo import ZoneInfo

from include.demand_forecast import ACCURACY_TABLE, MODEL_BUCKET, TABLE, WAREHOUSE_CONN_ID
from include.demand_model import WEATHER_COLUMNS

log = logging.getLogger(__name__)
NEW_YORK = ZoneInfo("America/New_York")
REPORT_BUCKET = "weather-data"
REPORT_PREFIX = "reports/nyc_taxi_demand/"


def issue_of(logical_date: datetime | None) -> tuple[datetime, date]:
    """(issue instant, issue date in New York) of a run."""
    from airflow.sdk.exceptions import AirflowFailException  # noqa: PLC0415

    if logical_date is None:
        raise AirflowFailException("a forecast is issued at its run's logical date: trigger the DAG with one "
                                   "(a Saturday 06:00 New York time), e.g. `airflow dags trigger "
                                   "nyc_taxi_demand_forecast --logical-date 2026-11-28T11:00:00+00:00`")
    # A plain datetime in zoneinfo's New York (Airflow hands pendulum ones, whose arithmetic differs).
    instant = datetime.fromtimestamp(logical_date.timestamp(), tz=NEW_YORK)
    return instant, instant.date()


def history_known_at(instant: datetime, issued_on: date, conn_id: str = WAREHOUSE_CONN_ID) -> list[dict]:
    """taxi_daily_weather days known at the issue instant (history_known_at.sql says what "known" means)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    from include.warehouse import apply_ddl, read_sql  # noqa: PLC0415

    hook = PostgresHook(postgres_conn_id=conn_id)
    conn = hook.get_conn()
    try:
        apply_ddl(conn, "tlc_loaded_files")  # a warehouse that never loaded a month has no record table yet
        apply_ddl(conn, "taxi_daily_weather")
        with conn.cursor() as cur:
            cur.execute(read_sql(f"{TABLE}/history_known_at.sql"), {"issued_on": issued_on, "issue_instant": instant})
            rows = cur.fetchall()
        conn.commit()
    finally:
        conn.close()
    columns = ["day", "trips", *WEATHER_COLUMNS]
    return [dict(zip(columns, row, strict=True)) for row in rows]


# How old the newest day known at issue time may be: the TLC publishes month M during month M+2 (by its
# 26th at the latest, devstack/standins/tlc_publisher.py): at most ~88 days after M's last day.
MAX_HISTORY_AGE_DAYS = 95


def history_is_current(instant: datetime, issued_on: date) -> tuple[bool, str | None]:
    """(is the history known at the issue instant current, its newest day): a forecast is not issued
    on history older than the publication delay explains (months still loading, or a broken feed)."""
    history = history_known_at(instant, issued_on)
    if not history:
        return False, None
    newest = history[-1]["day"]
    return (issued_on - newest).days <= MAX_HISTORY_AGE_DAYS, newest.isoformat()


def extract_weather_forecast(instant: datetime, issued_on: date, now: datetime | None = None) -> list[dict]:
    """The 7 forecast days' weather as forecast at the issue instant (JSON-ready: XCom)."""
    from include.demand_model import forecast_days  # noqa: PLC0415
    from include.weather import NYC_LATITUDE, NYC_LONGITUDE  # noqa: PLC0415
    from include.weather_forecasts import forecast_days_as_issued  # noqa: PLC0415

    days = forecast_days_as_issued(instant, forecast_days(issued_on), NYC_LATITUDE, NYC_LONGITUDE, now=now)
    return [{**day, "day": day["day"].isoformat()} for day in days]


def train_and_gate(instant: datetime, issued_on: date) -> dict:
    """Train the candidate on the history known at issue time, backtest it against the seasonal-naive
    baseline with the publication gap of the issue, gate it (include/demand_forecast.gate: raises
    ForecastGateFailed naming both errors - nothing is published, the previous forecast stands), and
    only then store the model and its card under s3://models/nyc_taxi_demand/<model_version>/.
    Returns what the asset event says of it."""
    from include.demand_forecast import (  # noqa: PLC0415
        card_json,
        gate,
        latest_published_card,
        model_card,
        save_model,
        train_and_backtest,
    )

    history = history_known_at(instant, issued_on)
    trained = train_and_backtest(history, issued_on)
    tested = trained["backtest"]
    previous = latest_published_card(issued_on)
    previous_mape = previous["backtest"]["mape"] if previous else None
    log.info("candidate %s: backtest MAPE %.4f, seasonal-naive %.4f, previous published %s", trained["version"],
             tested["mape"], tested["baseline_mape"],
             f"{previous['model_version']} {previous_mape:.4f}" if previous else "none")
    gate(tested["mape"], tested["baseline_mape"], previous_mape)
    card = model_card(trained, tested, issued_on)
    card["issue_instant"] = instant.isoformat()
    card["history_known_at_issue"] = "days < issued_on of months whose TLC file was out at the issue instant"
    card["previous_model"] = {"model_version": previous["model_version"], "mape": previous_mape} if previous else None
    save_model(trained["bytes"], card, trained["version"])
    log.info("model card:\n%s", card_json(card))
    return {"model_version": trained["version"], "issued_on": issued_on.isoformat(),
            "key": f"nyc_taxi_demand/{trained['version']}/", "backtest_mape": tested["mape"],
            "baseline_mape": tested["baseline_mape"], "previous_mape": previous_mape,
            "training_days": card["training_window"]["rows"], "last_known_day": card["training_window"]["last_day"],
            "gap_days": tested["gap_days"]}


def load_forecast(instant: datetime, issued_on: date, model_version: str, weather: list[dict]) -> dict:
    """The published model's forecast of the 7 days from the weather as forecast, with the seasonal-naive
    baseline as issued, into taxi_demand_forecast (the issue date's rows replaced)."""
    from include.demand_forecast import forecast, load_model, store_forecast  # noqa: PLC0415
    from include.demand_model import seasonal_naive  # noqa: PLC0415

    rows = forecast(load_model(model_version), issued_on, weather, model_version)
    baseline = seasonal_naive(history_known_at(instant, issued_on), [row["day"] for row in rows])
    for row, base in zip(rows, baseline, strict=True):
        row["baseline_trips"] = base
    store_forecast(issued_on, rows)
    return {"issued_on": issued_on.isoformat(), "model_version": model_version, "days": len(rows),
            "predicted_trips": [round(row["predicted_trips"], 1) for row in rows],
            "weather_source": sorted({day["source"] for day in weather})}


def score_forecasts(conn_id: str = WAREHOUSE_CONN_ID) -> list[dict]:
    """Score every stored forecast that has actuals not yet scored: MAE and MAPE of the model, MAPE of the
    baseline as issued, and the model's MAPE had it been given the observed weather of those days (what the
    weather forecast's error costs) into taxi_demand_forecast_accuracy; chart each scored week to
    s3://weather-data/reports/nyc_taxi_demand/<issued_on>.svg. Idempotent: a score is replaced."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    from include.demand_forecast import load_model, predict, score, store_accuracy, stored_forecast  # noqa: PLC0415
    from include.demand_model import mape  # noqa: PLC0415
    from include.object_storage import write_object  # noqa: PLC0415
    from include.warehouse import apply_ddl, read_sql  # noqa: PLC0415

    hook = PostgresHook(postgres_conn_id=conn_id)
    conn = hook.get_conn()
    try:
        for table in (TABLE, ACCURACY_TABLE, "taxi_daily_weather"):
            apply_ddl(conn, table)
        with conn.cursor() as cur:
            cur.execute(read_sql(f"{TABLE}/issues_to_score.sql"))
            pending = cur.fetchall()
        conn.commit()
    finally:
        conn.close()
    weeks = []
    for issued_on, version, _ in pending:
        rows = stored_forecast(issued_on, conn_id)
        known = [row for row in rows if row["trips"] is not None]
        metrics = score(rows, [{"day": r["day"], "trips": r["trips"]} for r in known],
                        [{"day": r["day"], "predicted_trips": r["baseline_trips"]} for r in rows])
        observed = hook.get_records(
            "SELECT day, temperature_min, temperature_mean, temperature_max, precipitation FROM taxi_daily_weather "
            "WHERE day = ANY(%s) ORDER BY day", [[r["day"] for r in known]])
        observed_rows = [dict(zip(["day", *WEATHER_COLUMNS], row, strict=True)) for row in observed]
        weeks.append((issued_on, version, rows, known, metrics, observed_rows))
    # Every week's model on its days' observed weather, in one model process.
    with_observed = predict([(load_model(version), observed_rows) for _, version, _, _, _, observed_rows in weeks])
    scored = []
    for (issued_on, version, rows, known, metrics, _), predicted in zip(weeks, with_observed, strict=True):
        metrics["mape_observed_weather"] = mape([float(r["trips"]) for r in known], predicted)
        store_accuracy(issued_on, version, metrics, conn_id)
        write_object(week_chart_svg(issued_on, rows), REPORT_BUCKET, report_key(issued_on))
        scored.append({"issued_on": issued_on.isoformat(), "model_version": version, **metrics})
        log.info("forecast of %s (model %s): %d days scored, MAPE %.4f, baseline %.4f, with observed weather %.4f",
                 issued_on, version, metrics["days_scored"], metrics["mape"], metrics["baseline_mape"],
                 metrics["mape_observed_weather"])
    return scored


def report_key(issued_on: date) -> str:
    return f"{REPORT_PREFIX}{issued_on.isoformat()}.svg"


def week_chart_svg(issued_on: date, rows: list[dict]) -> bytes:
    """The week's forecast, the seasonal-naive baseline and the actual trips per day, as SVG.
    Byte-identical for the same rows (fixed hash salt, no date in the metadata, text as paths)."""
    import io  # noqa: PLC0415

    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    days = [row["day"] for row in rows]
    labels = [f"{day:%a %m-%d}" for day in days]
    with matplotlib.rc_context({"svg.hashsalt": f"nyc_taxi_demand-{issued_on}", "svg.fonttype": "path"}):
        fig = Figure(figsize=(9, 4.5), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        positions = range(len(days))
        ax.bar(positions, [row["trips"] or 0 for row in rows], color="#f2b705", label="actual trips")
        ax.plot(positions, [row["predicted_trips"] for row in rows], color="#1f77b4", marker="o",
                label=f"forecast (model {rows[0]['model_version']})")
        ax.plot(positions, [row["baseline_trips"] for row in rows], color="#7f7f7f", marker="s", linestyle="--",
                label="seasonal-naive baseline")
        ax.set_xticks(list(positions), labels)
        ax.set_ylabel("yellow-taxi trips per New York day")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, fontsize=8, frameon=False)
        fig.suptitle(f"NYC yellow-taxi demand: forecast issued {issued_on:%a %Y-%m-%d} against what happened")
        out = io.BytesIO()
        fig.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


def published_model_key(version: str) -> str:
    return f"s3://{MODEL_BUCKET}/nyc_taxi_demand/{version}/"
