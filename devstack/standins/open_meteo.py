"""Open-Meteo stand-in: the archive API (`/v1/archive`) and the historical-forecast API
(`/v1/forecast`), with the real parameter checks, response layout and error bodies.

Values are deterministic: a climate model (latitude, season, time of day) plus noise derived from
a hash of the place and hour, so the same request always gets the same answer and a year of
hourly data is 8,760 realistic rows.
"""

from __future__ import annotations

import hashlib
import math
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

NAME = "open-meteo"
ARCHIVE_PATH = "/v1/archive"
FORECAST_PATH = "/v1/forecast"
PREFIXES = (ARCHIVE_PATH, FORECAST_PATH)

ARCHIVE_FIRST_DAY = date(1940, 1, 1)
FORECAST_FIRST_DAY = date(2022, 1, 1)
# Reanalysis reaches the present with a few days' delay; later days come back as null.
ARCHIVE_DELAY_DAYS = 5

HOURLY_VARIABLES = {"temperature_2m": "°C"}
DAILY_VARIABLES = {"temperature_2m_max": "°C", "temperature_2m_min": "°C"}

RATE_LIMIT_REASON = "Minutely API request limit exceeded. Please try again in one minute."
OVERLOADED_REASON = "The service is overloaded"


class BadRequest(Exception):
    pass


def _response():
    from devstack.standins.server import Response  # noqa: PLC0415 - avoid an import cycle

    return Response


def error(status: int):
    reasons = {
        400: "Parameter 'latitude' and 'longitude' must have the same number of elements",
        429: RATE_LIMIT_REASON,
        503: OVERLOADED_REASON,
    }
    return _response().json(status, {"error": True, "reason": reasons.get(status, "Internal server error")})


def _noise(*key) -> float:
    """Deterministic pseudo-random value in [-1, 1) for the given key."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1.0


def temperature(latitude: float, longitude: float, moment: datetime, model: str = "era5") -> float:
    """Air temperature at 2 m, °C, one decimal - a plausible climate, the same on every call."""
    day_of_year = moment.timetuple().tm_yday
    hemisphere = 1.0 if latitude >= 0 else -1.0
    mean = 27.0 - 0.4 * abs(latitude)
    seasonal = -hemisphere * (0.2 * abs(latitude) + 3.0) * math.cos(2 * math.pi * (day_of_year - 18) / 365.25)
    diurnal = -4.0 * math.cos(2 * math.pi * (moment.hour - 3) / 24)
    weather = 4.0 * _noise(model, round(latitude, 2), round(longitude, 2), moment.date().isoformat())
    jitter = 0.8 * _noise(model, round(latitude, 2), round(longitude, 2), moment.isoformat())
    return round(mean + seasonal + diurnal + weather + jitter, 1)


def _snap(value: float, step: float) -> float:
    """Open-Meteo answers with the grid cell's coordinates, not the requested ones."""
    return round(round(value / step) * step + step / 30, 6)


def _float_param(query: dict, name: str, low: float, high: float) -> float:
    if name not in query or query[name] == "":
        raise BadRequest(f"Parameter '{name}' is required")
    try:
        value = float(query[name])
    except ValueError:
        raise BadRequest(f"Cannot initialize Float from invalid String value {query[name]} for key {name}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name.capitalize()} must be in range of {low:g} to {high:g}°. Given: {value}.")
    return value


def _date_param(query: dict, name: str) -> date:
    if name not in query:
        raise BadRequest(f"Parameter '{name}' is required")
    try:
        return date.fromisoformat(query[name])
    except ValueError:
        raise BadRequest(f"Invalid date format for {name}. Use YYYY-MM-DD.") from None


def _timezone(query: dict, latitude: float, longitude: float) -> ZoneInfo:
    name = query.get("timezone", "GMT") or "GMT"
    if name == "auto":
        # The real API looks the zone up from the coordinates; the stand-in knows New York's.
        name = "America/New_York" if 24 <= latitude <= 50 and -90 <= longitude <= -66 else "GMT"
    try:
        return ZoneInfo("Etc/GMT" if name in ("GMT", "UTC") else name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest("Invalid timezone") from None


def _variables(query: dict, key: str, known: dict) -> list[str]:
    names = [name for name in query.get(key, "").split(",") if name]
    for name in names:
        if name not in known:
            raise BadRequest(f"Cannot initialize WeatherVariable from invalid String value {name} for key {key}")
    return names


def handle(request):
    try:
        return _handle(request)
    except BadRequest as exc:
        return _response().json(400, {"error": True, "reason": str(exc)})


def _handle(request):
    query = request.query
    archive = request.path.startswith(ARCHIVE_PATH)
    latitude = _float_param(query, "latitude", -90, 90)
    longitude = _float_param(query, "longitude", -180, 180)
    start, end = _date_param(query, "start_date"), _date_param(query, "end_date")
    if end < start:
        raise BadRequest("End-date must be larger or equals than start-date")
    first_day = ARCHIVE_FIRST_DAY if archive else FORECAST_FIRST_DAY
    last_day = date.today() + timedelta(days=16)
    for value, name in ((start, "start_date"), (end, "end_date")):
        if not first_day <= value <= last_day:
            raise BadRequest(
                f"Parameter '{name}' is out of allowed range from {first_day.isoformat()} to {last_day.isoformat()}"
            )
    hourly = _variables(query, "hourly", HOURLY_VARIABLES)
    daily = _variables(query, "daily", DAILY_VARIABLES)
    if daily and "timezone" not in query:
        raise BadRequest("Timezone is required")
    zone = _timezone(query, latitude, longitude)
    unixtime = query.get("timeformat", "iso8601") == "unixtime"
    time_unit = "unixtime" if unixtime else "iso8601"
    model = "era5" if archive else "best_match"
    cell_lat, cell_lon = _snap(latitude, 0.1), _snap(longitude, 0.1)
    first_moment = datetime(start.year, start.month, start.day, tzinfo=zone)
    offset = int(first_moment.utcoffset().total_seconds())
    available_until = date.today() - timedelta(days=ARCHIVE_DELAY_DAYS) if archive else last_day

    payload = {
        "latitude": cell_lat,
        "longitude": cell_lon,
        "generationtime_ms": 0.0450611114501953,
        "utc_offset_seconds": offset,
        "timezone": zone.key.replace("Etc/", "") if zone.key.startswith("Etc/") else zone.key,
        "timezone_abbreviation": first_moment.tzname() or "GMT",
        "elevation": round(10 + 90 * (_noise("elevation", cell_lat, cell_lon) + 1) / 2, 1),
    }
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]

    def stamp(moment: datetime, daily_stamp: bool) -> str | int:
        if unixtime:
            return int(moment.timestamp())
        return moment.strftime("%Y-%m-%d" if daily_stamp else "%Y-%m-%dT%H:%M")

    if hourly:
        moments = [datetime(d.year, d.month, d.day, hour, tzinfo=zone) for d in days for hour in range(24)]
        series = {
            name: [temperature(latitude, longitude, m, model) if m.date() <= available_until else None for m in moments]
            for name in hourly
        }
        payload["hourly_units"] = {"time": time_unit, **{n: HOURLY_VARIABLES[n] for n in hourly}}
        payload["hourly"] = {"time": [stamp(m, False) for m in moments], **series}
    if daily:
        per_day = {
            d: [temperature(latitude, longitude, datetime(d.year, d.month, d.day, h, tzinfo=zone), model)
                for h in range(24)]
            for d in days
        }
        series = {}
        for name in daily:
            pick = max if name.endswith("_max") else min
            series[name] = [pick(per_day[d]) if d <= available_until else None for d in days]
        payload["daily_units"] = {"time": time_unit, **{n: DAILY_VARIABLES[n] for n in daily}}
        payload["daily"] = {
            "time": [stamp(datetime(d.year, d.month, d.day, tzinfo=zone), True) for d in days],
            **series,
        }
    _apply_data_fault(payload, request.fault)
    return _response().json(200, payload)


def _apply_data_fault(payload: dict, fault: str | None) -> None:
    block = payload.get("hourly") or payload.get("daily")
    if not fault or block is None:
        return
    values = [key for key in block if key != "time"]
    if fault == "unequal_lengths":
        block[values[0]] = block[values[0]][:-1]
    elif fault == "all_null":
        for key in values:
            block[key] = [None] * len(block[key])
