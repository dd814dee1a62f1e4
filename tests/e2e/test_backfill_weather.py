"""backfilling_dataset_gathering end to end: daily New York min/max that do not depend on the day
they are fetched (Open-Meteo's one-offset answers), DST days, and what a manual trigger does."""

from __future__ import annotations

import copy
import csv
import io
import json
import urllib.request
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.conftest import fresh_dag

DAG_ID = "backfilling_dataset_gathering"
NEW_YORK = ZoneInfo("America/New_York")


def _run(dagbag, logical_date, conf=None):
    dag = fresh_dag(DAG_ID) if conf else copy.deepcopy(dagbag.get_dag(DAG_ID))
    for task in dag.tasks:
        task.retries = 0
    run = dag.test(logical_date=logical_date, run_conf=conf)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _rows(stack, key: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(stack.get_object("weather-data", key).decode())))


def _utc_hours(stack, first: str, last: str) -> dict[str, float]:
    """{UTC hour: value} from the historical-forecast stand-in, asked in GMT by plain HTTP."""
    url = (f"{stack.standin_url}/v1/forecast?latitude=40.7143&longitude=-74.006&start_date={first}"
           f"&end_date={last}&hourly=temperature_2m&timezone=GMT")
    with urllib.request.urlopen(url, timeout=30) as resp:
        body = json.load(resp)
    return dict(zip(body["hourly"]["time"], body["hourly"]["temperature_2m"], strict=True))


def test_daily_range_is_per_new_york_day_and_the_same_whenever_fetched(dagbag, standin, stack):
    """The historical-forecast API cuts `daily` at the offset of the day of the request: January's
    minimum fetched in July was the minimum from 04:00 to 04:00 UTC, not New York's day. The CSV
    must not change with the day it is fetched, and must hold New York's own days."""
    key = "daily_temperature_range/20250108_20250114.csv"
    # Runs of today with the week in the param: the January logical dates stay free for the
    # scheduler's backfill test, which shares this metadata DB.
    standin.configure(open_meteo_today="2025-07-20")
    run, states = _run(dagbag, datetime.now(UTC), {"week_start": "2025-01-08"})
    assert run.state == "success", states
    summer = stack.get_object("weather-data", key)
    standin.configure(open_meteo_today="2026-01-20")
    run, states = _run(dagbag, datetime.now(UTC), {"week_start": "2025-01-08"})
    assert run.state == "success", states

    assert stack.get_object("weather-data", key) == summer
    rows = _rows(stack, key)
    assert [r["date"] for r in rows] == [f"2025-01-{d:02d}" for d in range(8, 15)]
    hours = _utc_hours(stack, "2025-01-08", "2025-01-15")
    for row in rows:
        start = datetime.fromisoformat(row["date"]).replace(tzinfo=NEW_YORK).astimezone(UTC)
        values = [hours[(start + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M")] for h in range(24)]
        assert (float(row["temperature_min"]), float(row["temperature_max"])) == (min(values), max(values))
        assert row["day_start"] == f"{row['date']}T00:00-05:00" and row["hours"] == "24"


def test_a_dst_day_has_23_hours(dagbag, standin, stack, monkeypatch):
    """Gathering a March week (the param would refuse it: call the steps the task calls)."""
    from include.daily_weather import fetch_interval_temperature_range, write_interval_csv_to_s3

    daily = fetch_interval_temperature_range(datetime(2025, 3, 8, tzinfo=UTC), datetime(2025, 3, 11, tzinfo=UTC))
    write_interval_csv_to_s3(daily)
    rows = _rows(stack, "daily_temperature_range/20250308_20250310.csv")

    assert [(r["date"], r["hours"]) for r in rows] == [("2025-03-08", "24"), ("2025-03-09", "23"), ("2025-03-10", "24")]
    assert rows[1]["day_start"] == "2025-03-09T00:00-05:00" and rows[1]["day_end"] == "2025-03-10T00:00-04:00"


def test_manual_trigger_with_a_week_start_gathers_that_week(dagbag, standin, stack):
    """The UI's Trigger carries a logical date of now; the `week_start` param says which week."""
    key = "daily_temperature_range/20250122_20250128.csv"
    stack.s3().delete_object(Bucket="weather-data", Key=key)

    run, states = _run(dagbag, datetime.now(UTC), {"week_start": "2025-01-22"})

    assert run.state == "success", states
    assert [r["date"] for r in _rows(stack, key)] == [f"2025-01-{d}" for d in range(22, 29)]


def test_manual_trigger_for_any_other_date_fails_saying_how(dagbag, standin, stack, capfd):
    before = stack.list_keys("weather-data", "daily_temperature_range/")

    run, states = _run(dagbag, datetime.now(UTC))

    assert run.state == "failed" and states["extract_daily_temperature_range"] == "failed"
    out = capfd.readouterr().out
    assert "is not the start of a week of this backfill" in out and "week_start" in out
    assert "airflow backfill create" in out
    assert stack.list_keys("weather-data", "daily_temperature_range/") == before


def test_the_trigger_form_offers_the_weeks(dagbag):
    params = dagbag.get_dag(DAG_ID).params.dump()
    assert params["week_start"] is None
    schema = dagbag.get_dag(DAG_ID).params.get_param("week_start").schema
    assert schema["enum"] == [None, "2025-01-01", "2025-01-08", "2025-01-15", "2025-01-22", "2025-01-29"]


@pytest.mark.parametrize("dag_id", ["backfilling_dataset_gathering", "nyc_taxi_ingestion"])
def test_a_manual_run_now_gets_its_tasks(dagbag, dag_id):
    """Airflow creates no task instance for a run whose logical date lies after a DAG's end_date:
    the catch-up DAGs have none. The weekly backfill's schedule ends by itself; the taxi ingestion's
    (a timetable of our own, through serialization) starts at its first month and has no end."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = dagbag.get_dag(dag_id)
    assert dag.end_date is None and all(task.end_date is None for task in dag.tasks)
    serialized = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    infos, info = [], None
    while (info := serialized.next_dagrun_info(last_automated_run_info=info)) is not None and len(infos) < 100:
        infos.append(info.logical_date)
    if dag_id.startswith("backfilling"):
        assert 1 < len(infos) < 100  # a bounded catch-up
        assert max(infos) < datetime(2025, 2, 1, tzinfo=UTC)
    else:
        assert len(infos) == 100 and infos[0] == datetime(2025, 2, 2, 6, tzinfo=UTC)  # January 2025 on, no end
        assert max(infos) > datetime.now(UTC)


def test_each_week_emits_its_csv_event_with_its_days(dagbag, standin):
    from tests.e2e.asset_events import events_by_asset

    run, states = _run(dagbag, datetime.now(UTC), {"week_start": "2025-01-15"})

    assert run.state == "success", states
    assert events_by_asset(run) == {"weather_data.daily_temperature_range": [{
        "key": "daily_temperature_range/20250115_20250121.csv", "first_day": "2025-01-15", "last_day": "2025-01-21",
        "rows": 7, "data_interval_start": run.data_interval_start.isoformat(),
        "data_interval_end": run.data_interval_end.isoformat()}]}
