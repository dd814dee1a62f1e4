"""Open-Meteo client: hourly temperature (archive API) and daily min/max (historical-forecast API).

Every answer is validated before anything downstream sees it, and every failure raises an
OpenMeteoError whose message names the cause (the API's own `reason` where it gives one).
"""

from __future__ import annotations

import json
from datetime import date

from airflow.sdk.exceptions import AirflowFailException

from include.http_api import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, base_url

ARCHIVE_CONN_ID = "open_meteo_archive"
FORECAST_CONN_ID = "open_meteo_forecast"
ARCHIVE_ENDPOINT = "/v1/archive"
FORECAST_ENDPOINT = "/v1/forecast"


class OpenMeteoError(RuntimeError):
    """Open-Meteo could not give a usable answer."""


class OpenMeteoUnavailable(OpenMeteoError):
    """Rate limited, overloaded, server error or network failure: worth retrying later."""


class OpenMeteoBadResponse(OpenMeteoError):
    """The answer arrived but is not a usable dataset (malformed JSON, unequal arrays, all null)."""


class OpenMeteoRejectedRequest(OpenMeteoError, AirflowFailException):
    """HTTP 400: the request itself is wrong; retrying cannot help, so the task fails at once."""


def _request_json(conn_id: str, endpoint: str, params: dict, session=None) -> dict:
    import requests  # noqa: PLC0415 - keep DAG parsing free of HTTP libraries

    url = base_url(conn_id) + endpoint
    http = session or requests.Session()
    try:
        response = http.get(url, params=params, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        body = response.content
    except requests.RequestException as exc:
        raise OpenMeteoUnavailable(f"Open-Meteo request to {url} failed: {type(exc).__name__}: {exc}") from exc
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    reason = payload.get("reason") if isinstance(payload, dict) else None
    if response.status_code != 200 or (isinstance(payload, dict) and payload.get("error")):
        detail = reason or body[:200].decode(errors="replace").strip() or response.reason
        message = f"Open-Meteo {endpoint} answered HTTP {response.status_code}: {detail}"
        if response.status_code == 429:
            raise OpenMeteoUnavailable(f"{message} (rate limit; retried with backoff)")
        if response.status_code >= 500:
            raise OpenMeteoUnavailable(f"{message} (server side; retried with backoff)")
        if response.status_code == 400 or response.status_code == 200:
            raise OpenMeteoRejectedRequest(message)
        raise OpenMeteoError(message)
    if not isinstance(payload, dict):
        raise OpenMeteoBadResponse(
            f"Open-Meteo {endpoint} returned malformed JSON ({len(body)} bytes, truncated or not JSON): "
            f"{body[-80:].decode(errors='replace')!r}"
        )
    return payload


def _series(payload: dict, block_name: str, variables: list[str], endpoint: str) -> dict[str, list]:
    """The `time` array and each variable's array of one block, checked for shape and content."""
    block = payload.get(block_name)
    if not isinstance(block, dict) or not isinstance(block.get("time"), list):
        raise OpenMeteoBadResponse(f"Open-Meteo {endpoint} answer has no '{block_name}.time' array")
    series = {"time": block["time"]}
    for name in variables:
        values = block.get(name)
        if not isinstance(values, list):
            raise OpenMeteoBadResponse(f"Open-Meteo {endpoint} answer has no '{block_name}.{name}' array")
        if len(values) != len(series["time"]):
            raise OpenMeteoBadResponse(
                f"Open-Meteo {endpoint} returned arrays of unequal length: "
                f"{len(series['time'])} times but {len(values)} {name} values"
            )
        if any(v is not None and not isinstance(v, (int, float)) for v in values):
            raise OpenMeteoBadResponse(f"Open-Meteo {endpoint} returned non-numeric {name} values")
        if values and all(v is None for v in values):
            raise OpenMeteoBadResponse(
                f"Open-Meteo {endpoint} returned only null {name} values ({len(values)} rows): "
                "no data for that place and period yet"
            )
        series[name] = values
    if not series["time"]:
        raise OpenMeteoBadResponse(f"Open-Meteo {endpoint} returned no rows")
    return series


def fetch_hourly_temperatures(latitude: float, longitude: float, start_date: str | date, end_date: str | date,
                              timezone: str = "auto", session=None) -> dict[str, list]:
    """Hourly 2 m air temperature (°C) from the archive API.

    Returns {"time": ["YYYY-MM-DDTHH:MM", ...], "temperature": [float | None, ...]} in local time.
    """
    params = {
        "latitude": latitude,
        "longitude": longitude,
        "start_date": str(start_date),
        "end_date": str(end_date),
        "hourly": "temperature_2m",
        "timezone": timezone,
    }
    payload = _request_json(ARCHIVE_CONN_ID, ARCHIVE_ENDPOINT, params, session)
    series = _series(payload, "hourly", ["temperature_2m"], ARCHIVE_ENDPOINT)
    return {"time": series["time"], "temperature": series["temperature_2m"]}


def fetch_daily_temperature_range(latitude: float, longitude: float, start_date: str | date,
                                  end_date: str | date, timezone: str, session=None) -> dict[str, list]:
    """Daily min and max 2 m temperature (°C) from the historical-forecast API.

    Daily aggregates depend on where the day starts, so `timezone` is required.
    Returns {"date": [...], "temperature_min": [...], "temperature_max": [...]}.
    """
    params = {
        "latitude": latitude,
        "longitude": longitude,
        "start_date": str(start_date),
        "end_date": str(end_date),
        "daily": "temperature_2m_max,temperature_2m_min",
        "timezone": timezone,
    }
    payload = _request_json(FORECAST_CONN_ID, FORECAST_ENDPOINT, params, session)
    series = _series(payload, "daily", ["temperature_2m_min", "temperature_2m_max"], FORECAST_ENDPOINT)
    return {
        "date": series["time"],
        "temperature_min": series["temperature_2m_min"],
        "temperature_max": series["temperature_2m_max"],
    }
