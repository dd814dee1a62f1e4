"""End to end: whole weather DAG runs (dag.test) against the real S3 server, the metadata Postgres
and the Open-Meteo stand-in; assertions on the CSV files and objects that landed."""

from __future__ import annotations

import copy
import csv
import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEATHER_DAGS = ("weather_data_classes_api", "weather_data_taskflow_api", "weather_data_s3")


def _dag(dagbag, dag_id, retries: int | None = None, retry_delay: timedelta | None = None):
    """A fresh copy of the DAG (tests below tune retries; the shared DagBag must not change)."""
    dag = copy.deepcopy(dagbag.get_dag(dag_id))
    for task in dag.tasks:
        if retries is not None:
            task.retries = retries
        if retry_delay is not None:
            task.retry_delay = retry_delay
            task.retry_exponential_backoff = False
    return dag


def _run(dag, logical_date: datetime, conf: dict | None = None):
    run = dag.test(logical_date=logical_date, run_conf=conf)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    return run, states


def _parse_csv(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def _local_csv(dag_id: str, stamp: str) -> Path:
    return Path(os.environ["WEATHER_OUTPUT_DIR"]) / dag_id / f"{stamp}.csv"


@pytest.mark.parametrize("dag_id", ["weather_data_classes_api", "weather_data_taskflow_api"])
def test_local_dag_writes_a_year_of_clipped_hourly_rows(dagbag, standin, dag_id):
    run, states = _run(_dag(dagbag, dag_id), datetime(2025, 3, 1, tzinfo=UTC))

    assert run.state == "success", states
    path = _local_csv(dag_id, "20250301T000000")
    rows = _parse_csv(path.read_bytes())
    assert len(rows) == 8760
    assert list(rows[0]) == ["time", "time_utc", "temperature"]
    assert rows[0]["time"] == "2025-01-01T00:00-05:00" and rows[-1]["time"] == "2025-12-31T23:00-05:00"
    assert rows[0]["time_utc"] == "2025-01-01T05:00+00:00"
    temperatures = [float(r["temperature"]) for r in rows]
    assert all(-20.0 <= t <= 50.0 for t in temperatures)
    assert not list(path.parent.glob(".*.tmp")), "temp files left behind"


def test_classes_and_taskflow_versions_produce_identical_files(dagbag, standin):
    when = datetime(2025, 3, 2, tzinfo=UTC)
    for dag_id in ("weather_data_classes_api", "weather_data_taskflow_api"):
        run, states = _run(_dag(dagbag, dag_id), when)
        assert run.state == "success", states
    classes = _local_csv("weather_data_classes_api", "20250302T000000").read_bytes()
    taskflow = _local_csv("weather_data_taskflow_api", "20250302T000000").read_bytes()
    assert classes == taskflow


def test_params_choose_place_and_dates_and_extremes_are_clipped(dagbag, standin):
    """Far north in winter the stand-in's climate goes below -20 °C: the CSV must be clipped."""
    from include.open_meteo import fetch_hourly_temperatures

    conf = {"latitude": 82.5, "longitude": -62.3, "start_date": "2025-01-01", "end_date": "2025-01-31",
            "timezone": "GMT"}
    raw = fetch_hourly_temperatures(82.5, -62.3, "2025-01-01", "2025-01-31", "GMT")
    assert raw["time"][0] == "2025-01-01T00:00+00:00"
    assert min(raw["temperature"]) < -20.0, "precondition: the raw data needs values to clip"

    run, states = _run(_dag(dagbag, "weather_data_taskflow_api"), datetime(2025, 3, 3, tzinfo=UTC), conf)

    assert run.state == "success", states
    rows = _parse_csv(_local_csv("weather_data_taskflow_api", "20250303T000000").read_bytes())
    assert len(rows) == 31 * 24
    temperatures = [float(r["temperature"]) for r in rows]
    assert min(temperatures) == -20.0
    expected = [max(-20.0, min(50.0, t)) for t in raw["temperature"]]
    assert temperatures == expected


def _independent_new_york_year(stack) -> dict[str, float]:
    """{UTC hour: value} of 2025's New York hours, asked of the stand-in in GMT by plain HTTP -
    built without the project's client."""
    import json
    import urllib.request

    url = (f"{stack.standin_url}/v1/archive?latitude=40.7143&longitude=-74.006&start_date=2025-01-01"
           "&end_date=2026-01-01&hourly=temperature_2m&timezone=GMT")
    with urllib.request.urlopen(url, timeout=30) as resp:
        body = json.load(resp)
    assert body["utc_offset_seconds"] == 0
    return dict(zip(body["hourly"]["time"], body["hourly"]["temperature_2m"], strict=True))


def test_csv_is_the_same_whenever_it_is_fetched_and_each_hour_holds_its_own_value(dagbag, standin, stack):
    """Open-Meteo labels a whole answer with the offset of the day of the request (open-meteo
    #1255): the old CSV held 17:00 UTC under "2025-07-01T12:00" when fetched in winter and 16:00
    UTC when fetched in summer. Fetched on a winter day and on a summer day, the file must be
    byte-identical, every hour of 2025 in New York present once, each with its own UTC hour's value."""
    dag = _dag(dagbag, "weather_data_s3")
    key = "hourly_temperature/20250701T000000.csv"
    standin.configure(open_meteo_today="2026-01-20")
    run, states = _run(dag, datetime(2025, 7, 1, tzinfo=UTC))
    assert run.state == "success", states
    winter = stack.get_object("weather-data", key)
    standin.configure(open_meteo_today="2026-07-20")
    run, states = _run(dag, datetime(2025, 7, 1, tzinfo=UTC))
    assert run.state == "success", states
    summer = stack.get_object("weather-data", key)

    assert winter == summer
    rows = _parse_csv(summer)
    assert len(rows) == 8760 and len({r["time_utc"] for r in rows}) == 8760
    truth = _independent_new_york_year(stack)
    from zoneinfo import ZoneInfo

    new_york = ZoneInfo("America/New_York")
    for row in rows:
        moment = datetime.fromisoformat(row["time_utc"])
        local = datetime.fromisoformat(row["time"])
        assert local == moment and local.utcoffset() == moment.astimezone(new_york).utcoffset()
        assert float(row["temperature"]) == max(-20.0, min(50.0, truth[moment.strftime("%Y-%m-%dT%H:%M")]))
    noon = next(r for r in rows if r["time"] == "2025-07-01T12:00-04:00")
    assert noon["time_utc"] == "2025-07-01T16:00+00:00"
    days = {}
    for row in rows:
        days[row["time"][:10]] = days.get(row["time"][:10], 0) + 1
    assert days["2025-03-09"] == 23 and days["2025-11-02"] == 25 and len(days) == 365


def test_s3_dag_writes_object_keyed_by_logical_date(dagbag, standin, stack):
    run, states = _run(_dag(dagbag, "weather_data_s3"), datetime(2025, 4, 1, 6, 30, tzinfo=UTC))

    assert run.state == "success", states
    key = "hourly_temperature/20250401T063000.csv"
    assert key in stack.list_keys("weather-data", "hourly_temperature/")
    rows = _parse_csv(stack.get_object("weather-data", key))
    assert len(rows) == 8760
    assert all(-20.0 <= float(r["temperature"]) <= 50.0 for r in rows)
    load = run.get_task_instance("load_csv_to_s3")
    assert load.xcom_pull(task_ids="load_csv_to_s3") == f"s3://weather-data/{key}"


def test_large_xcom_goes_to_the_bucket_and_small_one_stays_in_the_db(dagbag, standin, stack):
    run, states = _run(_dag(dagbag, "weather_data_s3"), datetime(2025, 4, 2, tzinfo=UTC))

    assert run.state == "success", states
    prefix = f"xcom/weather_data_s3/{run.run_id}/"
    keys = stack.list_keys("airflow-xcom", prefix)
    tasks_in_bucket = {key[len(prefix):].split("/")[0] for key in keys}
    # The hourly dataset (~200 kB of JSON) crosses the 64 kB threshold; the S3 URL does not.
    assert tasks_in_bucket == {"extract_hourly_temperatures", "transform_clip_temperatures"}
    # ... and the task downstream reads the dataset back from the bucket intact.
    rows = _parse_csv(stack.get_object("weather-data", "hourly_temperature/20250402T000000.csv"))
    assert len(rows) == 8760


def test_rerunning_a_logical_date_leaves_exactly_the_same_objects(dagbag, standin, stack):
    dag = _dag(dagbag, "weather_data_s3")
    when = datetime(2025, 5, 1, tzinfo=UTC)

    _run(dag, when)
    first = stack.list_keys("weather-data", "hourly_temperature/")
    run, states = _run(dag, when)
    second = stack.list_keys("weather-data", "hourly_temperature/")

    assert run.state == "success", states
    assert second == first  # same keys, same ETags (content): nothing added, nothing changed
    assert "hourly_temperature/20250501T000000.csv" in second


@pytest.mark.parametrize(
    "fault",
    ["http_400", "http_429", "http_503", "truncated", "streaming_error", "not_json", "dropped", "unequal_lengths",
     "all_null"],
)
def test_open_meteo_failure_fails_the_run_and_writes_nothing(dagbag, standin, stack, fault):
    stack.inject_fault("/v1/archive", fault, times=None)
    when = datetime(2025, 6, 1, tzinfo=UTC)
    before = stack.list_keys("weather-data")

    # Retries are covered below; here every attempt meets the fault, so skip the waiting.
    run, states = _run(_dag(dagbag, "weather_data_s3", retries=0), when)

    assert run.state == "failed"
    assert states["extract_hourly_temperatures"] == "failed"
    assert states["load_csv_to_s3"] == "upstream_failed"
    assert stack.list_keys("weather-data") == before


@pytest.mark.parametrize("dag_id", ["weather_data_classes_api", "weather_data_taskflow_api"])
def test_local_dag_failure_leaves_no_file(dagbag, standin, stack, dag_id):
    stack.inject_fault("/v1/archive", "unequal_lengths", times=None)

    run, states = _run(_dag(dagbag, dag_id, retries=0), datetime(2025, 6, 2, tzinfo=UTC))

    assert run.state == "failed"
    assert not _local_csv(dag_id, "20250602T000000").exists()


def test_transient_rate_limit_is_retried_and_the_run_succeeds(dagbag, standin, stack):
    stack.inject_fault("/v1/archive", "http_429", times=1)

    run, states = _run(_dag(dagbag, "weather_data_s3", retry_delay=timedelta(seconds=1)),
                       datetime(2025, 6, 3, tzinfo=UTC))

    assert run.state == "success", states
    assert run.get_task_instance("extract_hourly_temperatures").try_number == 2
    assert "hourly_temperature/20250603T000000.csv" in stack.list_keys("weather-data")


@pytest.mark.parametrize("fault", ["http_400", "not_json", "unequal_lengths", "all_null"])
def test_rejected_request_and_malformed_answer_are_not_retried(dagbag, standin, stack, fault):
    """A 400 or a whole but wrong answer cannot get better by waiting: the task fails on its first
    try despite retries=2 (a body that broke off is retried instead, below)."""
    stack.inject_fault("/v1/archive", fault, times=None)

    run, states = _run(_dag(dagbag, "weather_data_s3", retry_delay=timedelta(seconds=1)),
                       datetime(2025, 6, 4, tzinfo=UTC))

    assert run.state == "failed"
    assert run.get_task_instance("extract_hourly_temperatures").try_number == 1


@pytest.mark.parametrize("fault", ["streaming_error", "truncated"])
def test_a_mid_stream_error_or_a_cut_body_is_retried_to_success(dagbag, standin, stack, capfd, fault):
    """Open-Meteo sends HTTP 200 before streaming; a backend timing out mid-stream leaves half a
    document and "Unexpected error while streaming data: timeoutReached" (open-meteo JsonWriter /
    BodyStreamWriter). That is the server's trouble: the task retries and the next try lands."""
    stack.inject_fault("/v1/archive", fault, times=1)

    run, states = _run(_dag(dagbag, "weather_data_s3", retry_delay=timedelta(seconds=1)),
                       datetime(2025, 6, 5, tzinfo=UTC))

    assert run.state == "success", states
    assert run.get_task_instance("extract_hourly_temperatures").try_number == 2
    out = capfd.readouterr().out
    assert ("Unexpected error while streaming data: timeoutReached" if fault == "streaming_error"
            else "JSON document cut short") in out
    assert "hourly_temperature/20250605T000000.csv" in stack.list_keys("weather-data")


def test_the_s3_object_emits_its_asset_event_with_key_rows_and_params(dagbag, standin):
    from include.open_meteo import DEFAULT_TIMEZONE
    from include.weather import DEFAULT_END_DATE, DEFAULT_START_DATE, NYC_LATITUDE, NYC_LONGITUDE
    from tests.e2e.asset_events import events_by_asset

    run, states = _run(_dag(dagbag, "weather_data_s3"), datetime(2025, 4, 3, 7, tzinfo=UTC))

    assert run.state == "success", states
    assert events_by_asset(run) == {"weather_data.hourly_temperature": [{
        "key": "hourly_temperature/20250403T070000.csv", "rows": 8760, "latitude": NYC_LATITUDE,
        "longitude": NYC_LONGITUDE, "start_date": DEFAULT_START_DATE, "end_date": DEFAULT_END_DATE,
        "timezone": DEFAULT_TIMEZONE}]}


def test_a_failed_run_emits_no_event(dagbag, standin, stack):
    from tests.e2e.asset_events import events_by_asset

    stack.inject_fault("/v1/archive", "http_400", times=None)

    run, _ = _run(_dag(dagbag, "weather_data_s3", retries=0), datetime(2025, 4, 4, tzinfo=UTC))

    assert run.state == "failed"
    assert events_by_asset(run) == {}
