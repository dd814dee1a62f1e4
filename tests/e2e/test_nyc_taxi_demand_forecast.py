"""nyc_taxi_demand_forecast end to end: whole DAG runs (dag.test) against real Postgres, S3 and the
Open-Meteo stand-in's previous-runs API. The history it learns from is seeded into taxi_daily_weather
(and tlc_loaded_files, the months' publication times) from the stand-ins' own models - the TLC stand-in's
synthetic demand per New York day and the Open-Meteo stand-in's observed weather - as a year and a half of
nyc_taxi_ingestion + nyc_taxi_daily_weather would have left it, without the minutes that would take."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

DAG_ID = "nyc_taxi_demand_forecast"
NEW_YORK = ZoneInfo("America/New_York")
FIRST_MONTH, LAST_MONTH = "2025-01", "2026-09"  # what the TLC had published by early December 2026
SCALE = 0.02  # the offline demo's scale
ISSUES = [date(2026, 7, 4) + timedelta(weeks=k) for k in range(8)]  # Saturdays: an 8-week backfill


def _months(first: str, last: str) -> list[str]:
    months, (year, mon) = [], map(int, first.split("-"))
    while f"{year:04d}-{mon:02d}" <= last:
        months.append(f"{year:04d}-{mon:02d}")
        year, mon = year + mon // 12, mon % 12 + 1
    return months


def _pg():
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id="warehouse_db")


def _day_weather(day: date) -> tuple[float, float, float, float]:
    """(min, mean, max temperature, precipitation) of a New York day from the Open-Meteo stand-in's hours."""
    from devstack.standins import open_meteo
    from include.weather import NYC_LATITUDE, NYC_LONGITUDE

    start = datetime(day.year, day.month, day.day, tzinfo=NEW_YORK).astimezone(UTC)
    nxt = day + timedelta(days=1)
    hours = int((datetime(nxt.year, nxt.month, nxt.day, tzinfo=NEW_YORK).astimezone(UTC) - start).total_seconds()
                // 3600)
    moments = [start + timedelta(hours=h) for h in range(hours)]
    temps = [open_meteo.temperature(NYC_LATITUDE, NYC_LONGITUDE, m) for m in moments]
    rain = sum(open_meteo.precipitation(NYC_LATITUDE, NYC_LONGITUDE, m + timedelta(hours=1)) for m in moments)
    return min(temps), sum(temps) / len(temps), max(temps), round(rain, 1)


def _seed_history() -> None:
    """taxi_daily_weather for FIRST_MONTH..LAST_MONTH (the TLC stand-in's day counts at the offline scale,
    with the stand-in's weather) and tlc_loaded_files (each month first published when the publisher
    stand-in publishes it)."""
    from devstack.standins import tlc, tlc_publisher
    from include.warehouse import apply_ddl

    rows, files = [], []
    for month in _months(FIRST_MONTH, LAST_MONTH):
        total = tlc.month_rows(month, None, SCALE)
        for entry, trips in zip(tlc.demand(month), tlc.day_counts(month, total), strict=True):
            t_min, t_mean, t_max, rain = _day_weather(entry["day"])
            hours = round((t_max - t_min) * 0) + 24  # weather_hours: only the DST days differ; not used here
            rows.append((entry["day"], trips, 15.0 * trips, 15.0, 2.5, t_min, t_mean, t_max, rain, hours))
        published = tlc_publisher.publication_time(month)
        files.append((f"{month}-01", f"https://d37ci6vzurychx.cloudfront.net/trip-data/yellow_tripdata_{month}.parquet",
                      f'"seed-{month}"', published, 1, total, published))
    conn = _pg().get_conn()
    try:
        for table in ("taxi_daily_weather", "tlc_loaded_files", "taxi_demand_forecast",
                      "taxi_demand_forecast_accuracy"):
            apply_ddl(conn, table)
        with conn.cursor() as cur:
            cur.execute("TRUNCATE taxi_daily_weather, tlc_loaded_files, taxi_demand_forecast, "
                        "taxi_demand_forecast_accuracy")
            cur.executemany("INSERT INTO taxi_daily_weather (day, trips, total_fare, mean_fare, mean_distance, "
                            "temperature_min, temperature_mean, temperature_max, precipitation, weather_hours) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
            cur.executemany("INSERT INTO tlc_loaded_files (data_month, url, etag, last_modified, bytes, rows, "
                            "first_published) VALUES (%s, %s, %s, %s, %s, %s, %s)", files)
        conn.commit()
    finally:
        conn.close()


def _run(issued_on: date | None, dag=None):
    """One run of the DAG at the issue instant of `issued_on` (Saturday 06:00 New York), or without a
    logical date (as a run triggered by taxi_daily_weather: scoring only)."""
    from tests.e2e.conftest import fresh_dag

    dag = copy.deepcopy(dag) if dag is not None else fresh_dag(DAG_ID)
    for task in dag.tasks:
        task.retries = 0
    when = None if issued_on is None else datetime(issued_on.year, issued_on.month, issued_on.day, 6,
                                                   tzinfo=NEW_YORK).astimezone(UTC)
    run = dag.test(logical_date=when)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _forecast(issued_on: date) -> list[tuple]:
    return _pg().get_records("SELECT day, lead_days, predicted_trips, model_version, baseline_trips "
                             "FROM taxi_demand_forecast WHERE issued_on = %s ORDER BY day", [issued_on])


@pytest.fixture(scope="module")
def backfilled(stack, dagbag):
    """The 8 weekly issues of ISSUES run in order, as the catch-up runs them."""
    _seed_history()
    dag = dagbag.get_dag(DAG_ID)
    results = {}
    for issued_on in ISSUES:
        run, states = _run(issued_on, dag)
        results[issued_on] = (run, states)
    results[None] = _run(None, dag)  # a month of actuals arriving after the last issue: scores what is left
    return results


def test_backfilling_8_weeks_gives_8_forecasts_and_their_scores(backfilled, stack):
    for issued_on, (run, states) in backfilled.items():
        assert run.state == "success", (issued_on, states)
    issues = _pg().get_records("SELECT issued_on, count(*), count(DISTINCT model_version), min(lead_days), "
                               "max(lead_days) FROM taxi_demand_forecast GROUP BY issued_on ORDER BY issued_on")
    assert [(i, n, v, lo, hi) for i, n, v, lo, hi in issues] == [(i, 7, 1, 1, 7) for i in ISSUES]
    scores = _pg().get_records("SELECT issued_on, days_scored, mape, baseline_mape, mape_observed_weather, "
                               "model_version FROM taxi_demand_forecast_accuracy ORDER BY issued_on")
    assert [s[0] for s in scores] == ISSUES and all(s[1] == 7 for s in scores)
    # The synthetic demand has a weekday cycle, holidays and a weather effect: the model must beat the
    # same-weekday-last-week baseline on what happened, not only in its backtest.
    model_mape = sum(s[2] for s in scores) / len(scores)
    baseline_mape = sum(s[3] for s in scores) / len(scores)
    assert model_mape < baseline_mape, scores
    for issued_on, *_, version in scores:
        assert stack.list_keys("models", f"nyc_taxi_demand/{version}/").keys() == {
            f"nyc_taxi_demand/{version}/model.pkl", f"nyc_taxi_demand/{version}/model_card.json"}
        assert stack.get_object("weather-data", f"reports/nyc_taxi_demand/{issued_on}.svg").startswith(b"<?xml")


def test_the_model_card_says_what_the_model_saw(backfilled, stack):
    import json

    version = _forecast(ISSUES[-1])[0][3]
    card = json.loads(stack.get_object("models", f"nyc_taxi_demand/{version}/model_card.json"))
    # The newest actual known at the last issue: 2026-06's file appears in August (on the stand-in's day).
    from devstack.standins.tlc_publisher import publication_time

    issue_instant = datetime(2026, 8, 22, 6, tzinfo=NEW_YORK)
    newest_month = "2026-06" if publication_time("2026-06") <= issue_instant else "2026-05"
    assert card["training_window"]["last_day"][:7] == newest_month
    assert max(card["months_seen"]) == newest_month
    assert card["backtest"]["mape"] <= 0.95 * card["baseline"]["mape"]
    assert {"scikit-learn", "numpy", "scipy", "holidays"} <= set(card["libraries"])


def test_a_rerun_gives_the_same_model_bytes_and_rows(backfilled, stack):
    issued_on = ISSUES[-1]
    before = _forecast(issued_on)
    version = before[0][3]
    model = stack.get_object("models", f"nyc_taxi_demand/{version}/model.pkl")

    run, states = _run(issued_on)

    assert run.state == "success", states
    assert _forecast(issued_on) == before
    assert stack.get_object("models", f"nyc_taxi_demand/{version}/model.pkl") == model
    assert len(stack.list_keys("models", "nyc_taxi_demand/")) == 2 * len(ISSUES)  # no new model, no duplicate


def test_future_data_planted_after_the_issue_never_reaches_the_model(backfilled, standin, stack):
    """Markers where the future lies - absurd trips on and after the issue date, 999 in every weather value
    forecast by a run after the issue instant: the re-run's model bytes and forecast are exactly those of
    before. Then a month whose file appeared a minute after the issue instant: it leaves the training data."""
    import json

    issued_on = ISSUES[3]
    instant = datetime(issued_on.year, issued_on.month, issued_on.day, 6, tzinfo=NEW_YORK)
    before = _forecast(issued_on)
    version = before[0][3]
    model = stack.get_object("models", f"nyc_taxi_demand/{version}/model.pkl")
    pg = _pg()
    saved = pg.get_records("SELECT day, trips FROM taxi_daily_weather WHERE day >= %s", [issued_on])
    newest = pg.get_first("SELECT max(data_month), max(first_published) FROM tlc_loaded_files "
                          "WHERE first_published <= %s", [instant])
    try:
        pg.run("UPDATE taxi_daily_weather SET trips = 1000000000 WHERE day >= %s", parameters=[issued_on])
        standin.configure(open_meteo_marker_after=instant.astimezone(UTC).isoformat())

        run, states = _run(issued_on)

        assert run.state == "success", states
        assert _forecast(issued_on) == before
        assert stack.get_object("models", f"nyc_taxi_demand/{version}/model.pkl") == model

        pg.run("UPDATE tlc_loaded_files SET first_published = %s WHERE data_month = %s",
               parameters=[instant + timedelta(minutes=1), newest[0]])
        run, states = _run(issued_on)
        assert run.state == "success", states
        card = json.loads(stack.get_object("models", f"nyc_taxi_demand/{_forecast(issued_on)[0][3]}/model_card.json"))
        assert f"{newest[0]:%Y-%m}" not in card["months_seen"] and card["training_window"]["last_day"] < \
            f"{newest[0]:%Y-%m-%d}"
    finally:
        conn = pg.get_conn()
        with conn.cursor() as cur:
            cur.executemany("UPDATE taxi_daily_weather SET trips = %s WHERE day = %s", [(t, d) for d, t in saved])
            cur.execute("UPDATE tlc_loaded_files SET first_published = %s WHERE data_month = %s",
                        [newest[1], newest[0]])
        conn.commit()
        conn.close()


def test_the_gate_keeps_a_model_worse_than_the_baseline_out(backfilled, stack, monkeypatch, capfd):
    """A candidate that predicts every day's mean (no weekday, no weather) loses to the seasonal-naive
    baseline in the backtest: the run fails naming both errors, no model is stored, and the week's
    published forecast stands."""
    from include import demand_model

    issued_on = ISSUES[-1]
    before = _forecast(issued_on)
    models_before = set(stack.list_keys("models", "nyc_taxi_demand/"))
    # The spec travels with the request to the model process, which trains scikit-learn's DummyRegressor.
    monkeypatch.setattr(demand_model, "MODEL_SPEC", {"estimator": "mean"})

    run, states = _run(issued_on)

    assert run.state == "failed"
    assert states["train_model"] == "failed" and states["load_forecast"] == "upstream_failed"
    out = capfd.readouterr().out
    assert "does not beat the seasonal-naive baseline's" in out and "candidate backtest MAPE" in out
    assert _forecast(issued_on) == before
    assert set(stack.list_keys("models", "nyc_taxi_demand/")) == models_before


def test_a_month_of_actuals_arriving_scores_the_forecasts_it_covers(backfilled, stack):
    """The DAG is scheduled on taxi_daily_weather as well as on its clock; a run without an issue instant
    (what that asset triggers) issues nothing and scores every forecast whose actuals arrived since."""
    from include.assets import TAXI_DAILY_WEATHER
    from tests.e2e.conftest import fresh_dag

    dag = fresh_dag(DAG_ID)
    assert TAXI_DAILY_WEATHER.uri in {asset.uri for _, asset in dag.timetable.asset_condition.iter_assets()}
    issued_on = ISSUES[-1]  # forecasts 2026-08-23 .. 08-29
    pg = _pg()
    saved = pg.get_records("SELECT * FROM taxi_daily_weather WHERE day >= '2026-08-01' AND day < '2026-08-29'")
    pg.run("DELETE FROM taxi_demand_forecast_accuracy WHERE issued_on = %s", parameters=[issued_on])
    pg.run("DELETE FROM taxi_daily_weather WHERE day >= '2026-08-01' AND day < '2026-08-29'")
    run, states = _run(None)
    assert run.state == "success", states
    assert states["is_issue_run"] == "success" and states["train_model"] == "skipped"
    partial = pg.get_first("SELECT days_scored FROM taxi_demand_forecast_accuracy WHERE issued_on = %s",
                           [issued_on])
    assert partial == (1,)  # only 08-29 has an actual

    conn = pg.get_conn()
    with conn.cursor() as cur:  # the rest of August arrives
        cur.executemany("INSERT INTO taxi_daily_weather VALUES (" + ", ".join(["%s"] * len(saved[0])) + ")", saved)
    conn.commit()
    conn.close()
    run, states = _run(None)

    assert run.state == "success", states
    assert pg.get_first("SELECT days_scored FROM taxi_demand_forecast_accuracy WHERE issued_on = %s",
                        [issued_on]) == (7,)
