"""Open-Meteo client: hourly temperature (archive API) and daily min/max (historical-forecast API).

Every answer is validated before anything downstream sees it, and every failure raises an
OpenMeteoError whose message names the cause (the API's own `reason` where it gives one).

Time zones are done here, not by the API. Asked for a named zone, Open-Meteo labels a whole
answer with ONE UTC offset - the one valid on the day of the request, no DST inside the series -
and cuts daily aggregates at that offset (open-meteo/open-meteo #261, #1255, #1764; the
maintainer recommends GMT+0 for long series). The same July hour would be labelled 12:00 when
fetched in summer and 11:00 when fetched in winter. So every request asks for GMT; each UTC hour
is then placed in the wanted zone with the IANA database (zoneinfo): 23 hours on the spring-
forward day, 25 on the fall-back day, and the same answer whenever it is fetched.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from airflow.sdk.exceptions import AirflowFailException

from include.http_api import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, base_url, parse_json_body

ARCHIVE_CONN_ID = "open_meteo_archive"
FORECAST_CONN_ID = "open_meteo_forecast"
ARCHIVE_ENDPOINT = "/v1/archive"
FORECAST_ENDPOINT = "/v1/forecast"


class OpenMeteoError(RuntimeError):
    """Open-Meteo could not give a usable answer."""


class OpenMeteoUnavailable(OpenMeteoError):
    """Rate limited, overloaded, server error, network failure or a body that broke off: worth
    retrying later."""


class OpenMeteoBadResponse(OpenMeteoError, AirflowFailException):
    """The answer arrived whole but is not a usable dataset (not JSON, unequal arrays, all null,
    wrong offset): fails at once - asking again in 30 s gets the same answer. A body that broke off
    (a cut connection, a truncated body, Open-Meteo's "Unexpected error while streaming data")
    is the server's problem and surfaces as OpenMeteoUnavailable instead."""


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
    payload, problem = parse_json_body(body)
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
    if problem is not None and problem[0] == "cut":
        # HTTP 200 but the body broke off (Open-Meteo's own mid-stream error, or a cut): the server
        # had a problem, not the data - the same request usually succeeds on a later try.
        raise OpenMeteoUnavailable(f"Open-Meteo {endpoint} answered HTTP 200 but {problem[1]} "
                                   "(server side; retried with backoff)")
    if not isinstance(payload, dict):
        raise OpenMeteoBadResponse(
            f"Open-Meteo {endpoint} returned malformed JSON: "
            f"{problem[1] if problem else f'a {type(payload).__name__}, not an object'}"
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


DEFAULT_TIMEZONE = "America/New_York"


def resolve_timezone(timezone: str, latitude: float, longitude: float, session=None) -> ZoneInfo:
    """The IANA zone to place hours in. `auto` asks Open-Meteo which zone the coordinates are in
    (one day of data, only its `timezone` field is used); `GMT` / `UTC` are UTC."""
    name = (timezone or "").strip() or DEFAULT_TIMEZONE
    if name == "auto":
        day = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()  # any day with data: only the name matters
        payload = _request_json(ARCHIVE_CONN_ID, ARCHIVE_ENDPOINT, {
            "latitude": latitude, "longitude": longitude, "start_date": day, "end_date": day,
            "hourly": "temperature_2m", "timezone": "auto"}, session)
        name = payload.get("timezone")
        if not isinstance(name, str) or not name:
            raise OpenMeteoBadResponse("Open-Meteo did not say which time zone timezone=auto resolved to")
    if name.upper() in ("GMT", "UTC", "ETC/GMT", "ETC/UTC"):
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise OpenMeteoRejectedRequest(f"unknown time zone {name!r}: use an IANA name such as America/New_York, "
                                       "GMT, or auto") from None


def local_day_bounds(first_day: str | date, last_day: str | date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the local calendar days first_day..last_day (inclusive) in `zone`
    (an end before the start is left for the API to refuse with its own reason)."""
    first, last = date.fromisoformat(str(first_day)), date.fromisoformat(str(last_day))
    start = datetime(first.year, first.month, first.day, tzinfo=zone).astimezone(UTC)
    after = last + timedelta(days=1)
    return start, datetime(after.year, after.month, after.day, tzinfo=zone).astimezone(UTC)


def fetch_utc_hourly(conn_id: str, endpoint: str, latitude: float, longitude: float, start: datetime, end: datetime,
                     variables: list[str], session=None) -> tuple[list[datetime], dict[str, list]]:
    """Hourly values of each of `variables` for the UTC instants in [start, end), in one request asked
    for in GMT so that no offset is applied by the API. Checks that the answer is GMT and one row per
    hour. Returns (instants, {variable: values})."""
    last = end - timedelta(hours=1)
    params = {"latitude": latitude, "longitude": longitude, "start_date": start.date().isoformat(),
              "end_date": last.date().isoformat(), "hourly": ",".join(variables), "timezone": "GMT"}
    payload = _request_json(conn_id, endpoint, params, session)
    if payload.get("utc_offset_seconds") != 0:
        raise OpenMeteoBadResponse(f"Open-Meteo {endpoint} answered with utc_offset_seconds "
                                   f"{payload.get('utc_offset_seconds')!r} to a request for GMT: "
                                   "its times cannot be placed")
    series = _series(payload, "hourly", list(variables), endpoint)
    try:
        moments = [datetime.fromisoformat(t).replace(tzinfo=UTC) for t in series["time"]]
    except (TypeError, ValueError):
        raise OpenMeteoBadResponse(f"Open-Meteo {endpoint} returned times that are not ISO 8601: "
                                   f"{series['time'][:2]!r}") from None
    if any(b - a != timedelta(hours=1) for a, b in zip(moments, moments[1:], strict=False)):
        raise OpenMeteoBadResponse(f"Open-Meteo {endpoint} returned hours that are not consecutive")
    kept = [i for i, m in enumerate(moments) if start <= m < end]
    expected = int((end - start) / timedelta(hours=1))
    if len(kept) != expected:
        raise OpenMeteoBadResponse(f"Open-Meteo {endpoint} returned {len(kept)} of the {expected} hours from "
                                   f"{start.isoformat()} to {end.isoformat()}")
    values = {name: [series[name][i] for i in kept] for name in variables}
    for name in variables:
        if all(v is None for v in values[name]):
            raise OpenMeteoBadResponse(f"Open-Meteo {endpoint} returned only null {name} values ({len(kept)} rows) "
                                       "for the hours asked: no data for that place and period yet")
    return [moments[i] for i in kept], values


def fetch_utc_hours(conn_id: str, endpoint: str, latitude: float, longitude: float, start: datetime, end: datetime,
                    variable: str, session=None) -> tuple[list[datetime], list]:
    """Hourly values of one `variable` for the UTC instants in [start, end) (see fetch_utc_hourly)."""
    moments, values = fetch_utc_hourly(conn_id, endpoint, latitude, longitude, start, end, [variable], session)
    return moments, values[variable]


def fetch_hourly_temperatures(latitude: float, longitude: float, start_date: str | date, end_date: str | date,
                              timezone: str = DEFAULT_TIMEZONE, session=None) -> dict[str, list]:
    """Hourly 2 m air temperature (°C) from the archive API for the local calendar days
    start_date..end_date in `timezone` (IANA name, `GMT`, or `auto`: the place's own zone).

    Returns {"time": local ISO 8601 with its offset ("2025-07-01T12:00-04:00"), "time_utc": the
    same instant in UTC ("2025-07-01T16:00+00:00"), "temperature": [float | None, ...]} - one row
    per real hour, so a DST day has 23 or 25 rows and every time is unambiguous.
    """
    zone = resolve_timezone(timezone, latitude, longitude, session)
    start, end = local_day_bounds(start_date, end_date, zone)
    moments, values = fetch_utc_hours(ARCHIVE_CONN_ID, ARCHIVE_ENDPOINT, latitude, longitude, start, end,
                                      "temperature_2m", session)
    return {
        "time": [m.astimezone(zone).isoformat(timespec="minutes") for m in moments],
        "time_utc": [m.isoformat(timespec="minutes") for m in moments],
        "temperature": values,
    }


def fetch_daily_temperature_range(latitude: float, longitude: float, start_date: str | date,
                                  end_date: str | date, timezone: str, session=None) -> dict[str, list]:
    """Daily min and max 2 m temperature (°C) per local calendar day in `timezone`, from the
    historical-forecast API's hourly values (GMT) grouped by the day each hour falls on there -
    not the API's `daily` aggregates, which are cut at the offset of the day they are fetched.
    A day with a missing hour gets no min/max (None) rather than one over part of the day.

    Returns {"date", "day_start", "day_end", "hours", "temperature_min", "temperature_max"};
    day_start/day_end are the local midnights with their offsets (a DST day has 23 or 25 hours).
    """
    zone = resolve_timezone(timezone, latitude, longitude, session)
    start, end = local_day_bounds(start_date, end_date, zone)
    moments, values = fetch_utc_hours(FORECAST_CONN_ID, FORECAST_ENDPOINT, latitude, longitude, start, end,
                                      "temperature_2m", session)
    by_day: dict[date, list] = {}
    for moment, value in zip(moments, values, strict=True):
        by_day.setdefault(moment.astimezone(zone).date(), []).append(value)
    daily = {"date": [], "day_start": [], "day_end": [], "hours": [], "temperature_min": [], "temperature_max": []}
    for day, day_values in by_day.items():
        after = day + timedelta(days=1)
        day_start = datetime(day.year, day.month, day.day, tzinfo=zone)
        day_end = datetime(after.year, after.month, after.day, tzinfo=zone)
        complete = None not in day_values
        daily["date"].append(day.isoformat())
        daily["day_start"].append(day_start.isoformat(timespec="minutes"))
        daily["day_end"].append(day_end.isoformat(timespec="minutes"))
        daily["hours"].append(len(day_values))
        daily["temperature_min"].append(min(day_values) if complete else None)
        daily["temperature_max"].append(max(day_values) if complete else None)
    return daily
