"""The deferrable wait for a TLC month's file: the trigger polls HEAD against the publisher stand-in
(403 before publication, as CloudFront forwards S3's AccessDenied) and fires once the stand-in's clock
publishes the month; the sensor defers only when it must, with the month's deadline as its timeout."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from devstack.standins.tlc_publisher import publication_time
from include.tlc_publication import (
    PUBLICATION_DEADLINE,
    TlcFilePublishedTrigger,
    TlcMonthPublishedSensor,
    head,
    month_end,
)

MONTH = "2024-03"
PATH = "/trip-data/yellow_tripdata_{month}.parquet"


def _url(stack, month: str = MONTH) -> str:
    return stack.standin_url + PATH.format(month=month)


def _clock(standin, moment: datetime) -> None:
    standin.configure(tlc_now=moment.isoformat(), tlc_rows_per_month=2000)


def test_the_trigger_polls_until_the_month_is_published_and_fires_once_with_its_version(standin):
    published = publication_time(MONTH)
    _clock(standin, published - timedelta(hours=1))
    assert head(_url(standin))[0] == 403  # what the real URL answers before publication

    async def wait() -> list:
        events, polls_before = [], 0
        run = TlcFilePublishedTrigger(_url(standin), first_poll_s=0.05, max_poll_s=0.2).run()
        task = asyncio.ensure_future(run.__anext__())
        while polls_before < 3:  # let it look (and back off) a few times while unpublished
            await asyncio.sleep(0.1)
            polls_before = sum(1 for r in standin.requests_seen() if r["path"] == PATH.format(month=MONTH))
            assert not task.done(), task
        _clock(standin, published + timedelta(minutes=1))
        events.append(await asyncio.wait_for(task, timeout=30))
        await run.aclose()
        return events

    standin.forget_requests()
    (event,) = asyncio.run(wait())

    status, headers, _ = head(_url(standin))
    assert status == 200
    assert event.payload["status"] == "published" and event.payload["polls"] >= 4
    assert event.payload["etag"] == headers["ETag"] and event.payload["last_modified"] == headers["Last-Modified"]
    assert event.payload["length"] == int(headers["Content-Length"])


def test_the_trigger_serializes_to_its_importable_path():
    path, kwargs = TlcFilePublishedTrigger("http://x/f.parquet", 1, 2).serialize()
    assert path == "include.tlc_publication.TlcFilePublishedTrigger"
    assert kwargs == {"url": "http://x/f.parquet", "first_poll_s": 1, "max_poll_s": 2}


def _sensor_context(month: str) -> dict:
    return {"logical_date": None, "params": {"month": month}}


def test_the_sensor_returns_at_once_for_a_published_month(standin, monkeypatch):
    _clock(standin, publication_time(MONTH) + timedelta(days=1))
    monkeypatch.setattr("include.nyc_taxi.download_url", lambda month: _url(standin, month))

    result = TlcMonthPublishedSensor(task_id="wait").execute(_sensor_context(MONTH))

    assert result["month"] == MONTH and result["polls"] == 1 and result["etag"]


def test_the_sensor_defers_an_unpublished_month_until_its_deadline(standin, monkeypatch):
    from airflow.sdk.exceptions import TaskDeferred

    month = (datetime.now(UTC) - timedelta(days=20)).strftime("%Y-%m")  # last month: not out yet anywhere
    _clock(standin, datetime.now(UTC))
    monkeypatch.setattr("include.nyc_taxi.download_url", lambda m: _url(standin, m))

    with pytest.raises(TaskDeferred) as deferred:
        TlcMonthPublishedSensor(task_id="wait").execute(_sensor_context(month))

    assert isinstance(deferred.value.trigger, TlcFilePublishedTrigger)
    assert deferred.value.trigger.url == _url(standin, month)
    assert deferred.value.kwargs == {"month": month}
    expected = month_end(month) + PUBLICATION_DEADLINE - datetime.now(UTC)
    assert abs(deferred.value.timeout - expected) < timedelta(minutes=1)


def test_a_month_past_its_deadline_fails_at_once_naming_url_and_deadline(standin, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setattr("include.nyc_taxi.download_url", lambda m: _url(standin, m).replace("yellow_", "purple_"))

    with pytest.raises(AirflowFailException, match=r"2018-01 is still not published .*purple_tripdata_2018-01"
                                                   r"\.parquet answers HTTP 403\) after its deadline 2018-06-01"):
        TlcMonthPublishedSensor(task_id="wait").execute(_sensor_context("2018-01"))


def test_a_run_of_an_unpublished_month_waits_deferred_and_loads_once_the_clock_publishes_it(
        dagbag, standin, monkeypatch):
    """nyc_taxi_ingestion on the TLC's parquet source, for a month the stand-in has not published:
    wait_for_publication defers (dag.test runs its trigger in line), the trigger keeps polling the
    HEAD while the stand-in answers 403, and once the clock passes publication the run loads the
    month whole."""
    import copy
    import json
    import threading

    # The month before last: its deadline (the real clock's business) is months away, while the stand-in's
    # clock decides whether it is out yet.
    month = (datetime.now(UTC).replace(day=1) - timedelta(days=32)).strftime("%Y-%m")
    path = PATH.format(month=month)
    monkeypatch.setenv("AIRFLOW_CONN_NYC_TLC", json.dumps({
        "conn_type": "http", "host": standin.standin_url, "extra": {"path": PATH}}))
    published = publication_time(month)
    _clock(standin, published - timedelta(hours=2))
    standin.forget_requests()
    dag = copy.deepcopy(dagbag.get_dag("nyc_taxi_ingestion"))
    for task in dag.tasks:
        task.retries = 0
    sensor = dag.get_task("wait_for_publication")
    sensor.first_poll_s, sensor.max_poll_s = 0.2, 0.5
    heads_while_unpublished, done = [], threading.Event()

    def publish_after_a_few_polls():
        while not done.wait(0.1):
            heads = [r for r in standin.requests_seen() if r["path"] == path and r["method"] == "HEAD"]
            if len(heads) >= 3:
                heads_while_unpublished.append(len(heads))
                _clock(standin, published + timedelta(minutes=5))
                return

    publisher = threading.Thread(target=publish_after_a_few_polls, daemon=True)
    publisher.start()
    try:
        run = dag.test(logical_date=datetime.now(UTC), run_conf={"month": month})
    finally:
        done.set()
        publisher.join(timeout=5)

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert heads_while_unpublished and heads_while_unpublished[0] >= 3  # it waited, polling, before loading
    gets = [r for r in standin.requests_seen() if r["path"] == path and r["method"] == "GET"]
    assert gets, "the file was never downloaded"
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    rows = PostgresHook(postgres_conn_id="warehouse_db").get_first(
        "SELECT count(*) FROM yellow_taxi_trips WHERE data_month = %s", [f"{month}-01"])[0]
    assert rows > 2000  # the month's trips plus its pickups outside the month, as the file holds them
