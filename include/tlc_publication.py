"""When a TLC month is published: a deferrable wait on the file's `HEAD` (event-based scheduling).

The TLC publishes each month's trip file about two months after the month ends (the course of the
second month after it) and sometimes republishes a month with corrections; before publication the
URL answers 403 (CloudFront in front of a private S3 bucket) or 404. A month's run therefore waits
for its file in the triggerer, not in a worker slot: `TlcMonthPublishedSensor` defers to
`TlcFilePublishedTrigger`, which polls the file's HEAD with exponential backoff and fires once it
answers 200, carrying the file's ETag, Last-Modified and length. The wait has a deadline
(PUBLICATION_DEADLINE after the month ends): a file that has not appeared by then fails the run
loudly instead of waiting forever.

Cheap to import (DAG parsing): the operator's and trigger's modules only; HTTP happens in run().
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow.triggers.base import BaseTrigger, TriggerEvent

# The TLC publishes a month during the second month after it; a file still missing four months after
# the month ended is not late, it is not coming (or the URL is wrong): fail and say so.
PUBLICATION_DEADLINE = timedelta(days=120)
# The first look again after 10 min; NYC_TAXI_PUBLICATION_FIRST_POLL_SECONDS (read when the DAG is parsed)
# shortens it for tests and demos.
FIRST_POLL = timedelta(seconds=float(os.environ.get("NYC_TAXI_PUBLICATION_FIRST_POLL_SECONDS") or 600))
MAX_POLL = timedelta(hours=6)
HEAD_TIMEOUT_S = 30


def month_end(month: str) -> datetime:
    """The first instant after `month` (YYYY-MM), UTC."""
    year, mon = map(int, month.split("-"))
    after = date(year + mon // 12, mon % 12 + 1, 1)
    return datetime(after.year, after.month, after.day, tzinfo=UTC)


def publication_deadline(month: str) -> datetime:
    return month_end(month) + PUBLICATION_DEADLINE


def head(url: str, timeout_s: float = HEAD_TIMEOUT_S) -> tuple[int | None, dict[str, str], str]:
    """(status, headers, error): one HEAD of `url`; status None when the request itself failed."""
    import requests  # noqa: PLC0415

    try:
        response = requests.head(url, timeout=timeout_s, allow_redirects=True)
    except requests.RequestException as exc:
        return None, {}, f"{type(exc).__name__}: {exc}"
    return response.status_code, dict(response.headers), ""


def file_version(headers: dict[str, str]) -> dict[str, Any]:
    """What identifies a published file's version: ETag, Last-Modified, Content-Length."""
    lowered = {key.lower(): value for key, value in headers.items()}
    length = lowered.get("content-length")
    return {"etag": lowered.get("etag"), "last_modified": lowered.get("last-modified"),
            "length": int(length) if length and length.isdigit() else None}


class TlcFilePublishedTrigger(BaseTrigger):
    """Polls `url` with HEAD until it answers 200 (published), backing off from `first_poll_s` to
    `max_poll_s`; 403/404 mean "not yet", anything else (5xx, network) is logged and polled again.
    Fires once: {"status": "published", "url", "etag", "last_modified", "length", "polls"}."""

    def __init__(self, url: str, first_poll_s: float = FIRST_POLL.total_seconds(),
                 max_poll_s: float = MAX_POLL.total_seconds()):
        super().__init__()
        self.url = url
        self.first_poll_s = first_poll_s
        self.max_poll_s = max_poll_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"url": self.url, "first_poll_s": self.first_poll_s, "max_poll_s": self.max_poll_s})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        delay, polls = self.first_poll_s, 0
        while True:
            polls += 1
            status, headers, error = await asyncio.to_thread(head, self.url)
            if status == 200:
                yield TriggerEvent({"status": "published", "url": self.url, "polls": polls, **file_version(headers)})
                return
            if status in (403, 404):
                self.log.info("%s not published yet (HTTP %s); next look in %.0f s", self.url, status, delay)
            else:
                self.log.warning("HEAD %s failed (%s); next look in %.0f s", self.url, error or f"HTTP {status}",
                                 delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_poll_s)


class TlcMonthPublishedSensor(BaseOperator):
    """Waits, deferred (no worker slot held), until the run's month's TLC file is published; then
    returns its month, URL and version (ETag, Last-Modified, length). The month is the run's (the
    `month` param, else the month before the logical date: include/nyc_taxi.month_of_run). The wait
    ends at the month's publication deadline, when Airflow fails the task (TaskDeferralTimeout); a
    run started after the deadline fails at once, naming the URL and the deadline."""

    def __init__(self, *, first_poll_s: float | None = None, max_poll_s: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.first_poll_s = first_poll_s if first_poll_s is not None else FIRST_POLL.total_seconds()
        self.max_poll_s = max_poll_s if max_poll_s is not None else MAX_POLL.total_seconds()

    def execute(self, context):
        from include.nyc_taxi import CSV_GZ, download_url, month_of_run, source_format  # noqa: PLC0415

        month = month_of_run(context.get("logical_date"), (context.get("params") or {}).get("month"))
        url = download_url(month)
        if source_format(url) == CSV_GZ:
            # The course mirror is frozen (2019-01..2021-07): nothing will be published there; download
            # skips (scheduled) or fails (manual) a month it does not have.
            return {"month": month, "url": url, "polls": 0, "etag": None, "last_modified": None, "length": None}
        status, headers, error = head(url)
        if status == 200:  # published already: nothing to wait for
            return {"month": month, "url": url, "polls": 1, **file_version(headers)}
        deadline = publication_deadline(month)
        remaining = deadline - datetime.now(UTC)
        if remaining <= timedelta(0):
            raise AirflowFailException(
                f"TLC file for {month} is still not published ({url} answers {error or f'HTTP {status}'}) after its "
                f"deadline {deadline:%Y-%m-%d} ({PUBLICATION_DEADLINE.days} days after the month): check the "
                "`nyc_tlc` connection's path, or whether the TLC skipped the month.")
        self.log.info("%s not published yet (%s): waiting in the triggerer until %s", url,
                      error or f"HTTP {status}", f"{deadline:%Y-%m-%d}")
        self.defer(trigger=TlcFilePublishedTrigger(url, self.first_poll_s, self.max_poll_s),
                   method_name="execute_complete", kwargs={"month": month}, timeout=remaining)
        return None

    def execute_complete(self, context, event: dict[str, Any] | None = None, month: str = "") -> dict:
        if not event or event.get("status") != "published":
            raise AirflowFailException(f"TLC publication wait for {month} ended without the file: {event!r}")
        return {"month": month, **{key: event.get(key) for key in ("url", "etag", "last_modified", "length", "polls")}}


def republished_months(conn_id: str = "warehouse_db") -> list[dict]:
    """Months of yellow_taxi_trips whose file now answers another version than the one loaded
    (tlc_loaded_files): the TLC republished them with corrections. One HEAD per loaded month of the
    source the `nyc_tlc` connection names now (months loaded from another URL - the other source - are
    not compared: a switch of source is not a republication). [{"month", "loaded", "now"}], oldest first."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    from include.nyc_taxi import LOADED_FILES_TABLE, download_url, republication  # noqa: PLC0415

    hook = PostgresHook(postgres_conn_id=conn_id)
    if not hook.get_first("SELECT to_regclass(%s) IS NOT NULL", [LOADED_FILES_TABLE])[0]:
        return []
    changed = []
    for data_month, url, etag, modified in hook.get_records(
            "SELECT data_month, url, etag, last_modified FROM tlc_loaded_files ORDER BY data_month"):
        month = f"{data_month:%Y-%m}"
        if url != download_url(month):
            continue
        status, headers, error = head(url)
        if status != 200:  # withdrawn or unreachable: nothing to reload; say so
            import logging  # noqa: PLC0415

            logging.getLogger(__name__).warning("HEAD %s: %s - %s not compared", url, error or f"HTTP {status}", month)
            continue
        from include.nyc_taxi import _http_date  # noqa: PLC0415

        version = file_version(headers)
        now = {"url": url, "etag": version["etag"], "last_modified": _http_date(headers)}
        loaded = {"url": url, "etag": etag, "last_modified": modified.isoformat() if modified else None}
        if republication(loaded, now) is not None:
            changed.append({"month": month, "loaded": loaded, "now": now})
    return changed
