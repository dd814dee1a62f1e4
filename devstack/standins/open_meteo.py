"""Open-Meteo stand-in: the archive API (`/v1/archive`), the historical-forecast API
(`/v1/forecast`), the previous-model-runs API (`/previous-runs-api/v1/forecast`) and the live
forecast API (`/live-forecast-api/v1/forecast`), with the real parameter checks, response layout,
time handling and error bodies.

The three forecast APIs share the path `/v1/forecast` on three hosts; the stand-in serves every API
on one port, so the local connections `open_meteo_previous_runs` and `open_meteo_live_forecast`
carry a path prefix of their own (CONNECTION_PATHS, applied by devstack/settings.point_apis_at) and
the stand-in tells the hosts apart by it.

Values are deterministic: a climate model (latitude, season, local solar time) plus noise derived
from a hash of the place and the UTC hour, so the same request always gets the same answer and a
year of hourly data is 8,760 realistic rows. A value belongs to a UTC instant; only its label
depends on the requested time zone.

Time zones, as the real API does them (open-meteo/open-meteo #261, #488, #1255, #1545, #1764; the
maintainer in #1255: the API "operates solely in the current timezone, with no DST adjustments
applied throughout the time series. For processing long time-series data, we recommend using
GMT+0"): with `timezone=auto` or an IANA name, ONE UTC offset - the one valid on the day the
request is made - labels every `time` of the response and cuts every `daily` aggregate;
`utc_offset_seconds` is that offset and `timezone_abbreviation` reads `GMT-5` / `GMT-4`. A
July hour asked for in January is therefore labelled with the winter offset. "The day the
request is made" is the setting `open_meteo_today` (ISO date; null = the real date), so tests can
fetch the same period in winter and in summer. With `timeformat=unixtime` hourly times are UTC
epochs and daily ones the epoch of the (fixed-offset) local midnight, as the docs describe.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from devstack.standins.messages import Response

NAME = "open-meteo"
ARCHIVE_PATH = "/v1/archive"
FORECAST_PATH = "/v1/forecast"
PREVIOUS_RUNS_PREFIX = "/previous-runs-api"  # stands for https://previous-runs-api.open-meteo.com
LIVE_FORECAST_PREFIX = "/live-forecast-api"  # stands for https://api.open-meteo.com
PREVIOUS_RUNS_PATH = PREVIOUS_RUNS_PREFIX + FORECAST_PATH
LIVE_FORECAST_PATH = LIVE_FORECAST_PREFIX + FORECAST_PATH
PREFIXES = (ARCHIVE_PATH, FORECAST_PATH, PREVIOUS_RUNS_PATH, LIVE_FORECAST_PATH)
# conn_id -> the path prefix its local connection gets in front of the stand-in's address.
CONNECTION_PATHS = {"open_meteo_previous_runs": PREVIOUS_RUNS_PREFIX,
                    "open_meteo_live_forecast": LIVE_FORECAST_PREFIX}

# open_meteo_now: the stand-in's clock for the forecast APIs (ISO instant; null = noon UTC of
# open_meteo_today when that is set, else the real time). open_meteo_marker_after (ISO instant,
# null = off): every value forecast by a model run made after that instant is MARKER_VALUE, so a test
# can show that nothing issued after a forecast's issue instant reaches its features.
DEFAULT_CONFIG = {"open_meteo_today": None, "open_meteo_now": None, "open_meteo_marker_after": None}
MARKER_VALUE = 999.0

ARCHIVE_FIRST_DAY = date(1940, 1, 1)
FORECAST_FIRST_DAY = date(2022, 1, 1)
# Previous Model Runs API (open-meteo.com/en/docs/previous-runs-api, "Data Availability"): "We began
# collecting past model run data in January 2024 [...] For GFS, data has been integrated from April
# 2021 onward, but only for 2m temperature." The stand-in's best_match model: a run made before
# 2024-01-01 was never collected, its values are null (as the real API answers for missing data).
PREVIOUS_RUNS_FIRST_DAY = date(2021, 4, 1)
PREVIOUS_RUNS_COLLECTED_FROM = datetime(2024, 1, 1, tzinfo=UTC)
PREVIOUS_DAYS = range(1, 8)  # _previous_day1 .. _previous_day7
# Forecast API (open-meteo.com/en/docs): `past_days` up to 92, `forecast_days` up to 16.
LIVE_PAST_DAYS = 92
# Reanalysis reaches the present with about 5 days' delay (api-facts); later hours come back null.
ARCHIVE_DELAY_DAYS = 5

# precipitation: "Total precipitation (rain, showers, snow) sum of the preceding hour", mm - the
# archive API's hourly variable as documented (open-meteo.com/en/docs/historical-weather-api,
# "Hourly Parameter Definition": valid time "Preceding hour sum", unit mm); the value labelled
# 10:00 fell from 09:00 to 10:00. temperature_2m is instant (the value at the hour).
HOURLY_VARIABLES = {"temperature_2m": "°C", "precipitation": "mm"}
DAILY_VARIABLES = {"temperature_2m_max": "°C", "temperature_2m_min": "°C"}

RATE_LIMIT_REASON = "Minutely API request limit exceeded. Please try again in one minute."
OVERLOADED_REASON = "The service is overloaded"


class BadRequest(Exception):
    pass


def error(status: int):
    reasons = {
        400: "Parameter 'latitude' and 'longitude' must have the same number of elements",
        429: RATE_LIMIT_REASON,
        503: OVERLOADED_REASON,
    }
    return Response.json(status, {"error": True, "reason": reasons.get(status, "Internal server error")})


def _noise(*key) -> float:
    """Deterministic pseudo-random value in [-1, 1) for the given key."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1.0


def temperature(latitude: float, longitude: float, moment: datetime, model: str = "era5") -> float:
    """Air temperature at 2 m, °C, one decimal, at the UTC instant `moment` - a plausible climate,
    the same on every call whatever time zone the answer is labelled in."""
    moment = moment.astimezone(UTC)
    day_of_year = moment.timetuple().tm_yday
    hemisphere = 1.0 if latitude >= 0 else -1.0
    mean = 27.0 - 0.4 * abs(latitude)
    seasonal = -hemisphere * (0.2 * abs(latitude) + 3.0) * math.cos(2 * math.pi * (day_of_year - 18) / 365.25)
    solar_hour = (moment.hour + moment.minute / 60 + longitude / 15.0) % 24  # coldest near 03:00 solar time
    diurnal = -4.0 * math.cos(2 * math.pi * (solar_hour - 3) / 24)
    solar_day = (moment + timedelta(hours=longitude / 15.0)).date().isoformat()
    weather = 4.0 * _noise(model, round(latitude, 2), round(longitude, 2), solar_day)
    jitter = 0.8 * _noise(model, round(latitude, 2), round(longitude, 2), moment.strftime("%Y-%m-%dT%H:%M"))
    return round(mean + seasonal + diurnal + weather + jitter, 1)


def precipitation(latitude: float, longitude: float, moment: datetime, model: str = "era5") -> float:
    """Precipitation (mm, one decimal) of the hour that ENDS at the UTC instant `moment`: dry on
    about 70% of (solar) days, on the wet ones rain in about 40% of the hours - some 1,200 mm a year,
    about New York's. Deterministic, the same whatever zone the answer is labelled in."""
    moment = moment.astimezone(UTC)
    place = (model, round(latitude, 2), round(longitude, 2))
    solar_day = (moment - timedelta(minutes=30) + timedelta(hours=longitude / 15.0)).date().isoformat()
    wetness = _noise(*place, "wet", solar_day)
    if wetness < 0.4:
        return 0.0
    shower = _noise(*place, "rain", moment.strftime("%Y-%m-%dT%H:%M"))
    if shower < 0.2:
        return 0.0
    return round(0.1 + 2.0 * ((shower - 0.2) / 0.8) ** 2 * (1 + 2 * (wetness - 0.4)), 1)


HOURLY_MODELS = {"temperature_2m": temperature, "precipitation": precipitation}


def forecast_error(latitude: float, longitude: float, moment: datetime, lead_days: int, name: str,
                   observed: float) -> float:
    """A model run's forecast of `name` for the UTC hour `moment`, made `lead_days` days before it:
    the stand-in's observed value plus an error that grows with the lead, deterministic per
    (place, hour, lead). The previous-runs docs (open-meteo.com/en/docs/previous-runs-api): "Each day
    further back forecasts longer into the future and, typically, increases volatility. Data jumps
    become wilder past Day 6 or 7" - so the spread grows linearly and jumps by half past day 5."""
    if lead_days <= 0:
        return observed  # Day 0: "latest forecast close to measurements"
    wild = 1.5 if lead_days >= 6 else 1.0
    key = (round(latitude, 2), round(longitude, 2), moment.strftime("%Y-%m-%dT%H:%M"), lead_days)
    if name == "temperature_2m":
        # A day-long bias of the run plus an hourly jitter, both wider for longer leads.
        day_key = (round(latitude, 2), round(longitude, 2), moment.date().isoformat(), lead_days)
        spread = 0.6 * lead_days * wild
        return round(observed + spread * _noise("run-bias", *day_key) + 0.3 * spread * _noise("run-jitter", *key), 1)
    # Precipitation: the amount scaled by up to +-(15% x lead), and now and then rain forecast that
    # never fell (more often the longer the lead); never below zero.
    scaled = observed * (1 + 0.15 * lead_days * wild * _noise("run-rain", *key))
    if _noise("run-spurious", *key) > 1 - 0.03 * lead_days * wild:
        scaled += 0.1 * lead_days
    return round(max(0.0, scaled), 1)


def today(config: dict) -> date:
    """The day the request is made: the `open_meteo_today` setting, else the date of
    `open_meteo_now`, else the real date."""
    config = config or {}
    if config.get("open_meteo_today"):
        return date.fromisoformat(config["open_meteo_today"])
    if config.get("open_meteo_now"):
        return now(config).date()
    return datetime.now(UTC).date()


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def now(config: dict) -> datetime:
    """The stand-in's clock for the forecast APIs: `open_meteo_now`, else noon UTC of `open_meteo_today`,
    else the real time. The live forecast is the model run made at this instant; previous runs made
    after it do not exist yet."""
    config = config or {}
    if config.get("open_meteo_now"):
        return _instant(config["open_meteo_now"])
    if config.get("open_meteo_today"):
        day = date.fromisoformat(config["open_meteo_today"])
        return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    return datetime.now(UTC)


def marker_after(config: dict) -> datetime | None:
    configured = (config or {}).get("open_meteo_marker_after")
    return _instant(configured) if configured else None


def fixed_offset(zone: ZoneInfo, on: date) -> timedelta:
    """The one UTC offset a response uses: the zone's offset on the day of the request."""
    return zone.utcoffset(datetime(on.year, on.month, on.day, 12))


def abbreviation(offset: timedelta) -> str:
    """`GMT`, `GMT-5`, `GMT+5:30`: how recent responses name the fixed offset."""
    minutes = int(offset.total_seconds()) // 60
    if minutes == 0:
        return "GMT"
    sign = "+" if minutes > 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"GMT{sign}{hours}" + (f":{rest:02d}" if rest else "")


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
        return Response.json(400, {"error": True, "reason": str(exc)})


def _previous_day(name: str) -> tuple[str, int]:
    """`temperature_2m_previous_day3` -> ("temperature_2m", 3); a plain name is Day 0."""
    base, _, n = name.rpartition("_previous_day")
    return (base, int(n)) if base else (name, 0)


PREVIOUS_RUNS_VARIABLES = {**HOURLY_VARIABLES, **{f"{name}_previous_day{n}": unit for name, unit in
                                                  HOURLY_VARIABLES.items() for n in PREVIOUS_DAYS}}


def _handle(request):
    if request.path.startswith(PREVIOUS_RUNS_PATH):
        return _handle_forecast_runs(request, live=False)
    if request.path.startswith(LIVE_FORECAST_PATH):
        return _handle_forecast_runs(request, live=True)
    query = request.query
    archive = request.path.startswith(ARCHIVE_PATH)
    latitude = _float_param(query, "latitude", -90, 90)
    longitude = _float_param(query, "longitude", -180, 180)
    start, end = _date_param(query, "start_date"), _date_param(query, "end_date")
    if end < start:
        raise BadRequest("End-date must be larger or equals than start-date")
    now_day = today(request.config)
    first_day = ARCHIVE_FIRST_DAY if archive else FORECAST_FIRST_DAY
    last_day = now_day + timedelta(days=16)
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
    offset = fixed_offset(zone, now_day)  # ONE offset for the whole answer, whatever the dates
    unixtime = query.get("timeformat", "iso8601") == "unixtime"
    time_unit = "unixtime" if unixtime else "iso8601"
    model = "era5" if archive else "best_match"
    cell_lat, cell_lon = _snap(latitude, 0.1), _snap(longitude, 0.1)
    # Reanalysis reaches the present with a few days' delay: later hours are null.
    available_until = (datetime(now_day.year, now_day.month, now_day.day, tzinfo=UTC)
                       - timedelta(days=ARCHIVE_DELAY_DAYS - 1)) if archive else None

    payload = {
        "latitude": cell_lat,
        "longitude": cell_lon,
        "generationtime_ms": 0.0450611114501953,
        "utc_offset_seconds": int(offset.total_seconds()),
        "timezone": zone.key.replace("Etc/", "") if zone.key.startswith("Etc/") else zone.key,
        "timezone_abbreviation": abbreviation(offset),
        "elevation": round(10 + 90 * (_noise("elevation", cell_lat, cell_lon) + 1) / 2, 1),
    }
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]

    def instant(day: date, hour: int) -> datetime:
        """The UTC instant the label `day`T`hour`:00 stands for, at the response's fixed offset."""
        return datetime(day.year, day.month, day.day, hour, tzinfo=UTC) - offset

    def value(moment: datetime, name: str = "temperature_2m") -> float | None:
        if available_until is not None and moment >= available_until:
            return None
        return HOURLY_MODELS[name](latitude, longitude, moment, model)

    if hourly:
        labels = [(d, hour) for d in days for hour in range(24)]
        moments = [instant(d, hour) for d, hour in labels]
        times = ([int(m.timestamp()) for m in moments] if unixtime
                 else [f"{d.isoformat()}T{hour:02d}:00" for d, hour in labels])
        payload["hourly_units"] = {"time": time_unit, **{n: HOURLY_VARIABLES[n] for n in hourly}}
        payload["hourly"] = {"time": times, **{name: [value(m, name) for m in moments] for name in hourly}}
    if daily:
        # Aggregates over the 24 hours of each day as the response labels it (fixed offset).
        per_day = {d: [value(instant(d, h)) for h in range(24)] for d in days}
        series = {}
        for name in daily:
            pick = max if name.endswith("_max") else min
            series[name] = [None if None in per_day[d] else pick(per_day[d]) for d in days]
        times = [int(instant(d, 0).timestamp()) for d in days] if unixtime else [d.isoformat() for d in days]
        payload["daily_units"] = {"time": time_unit, **{n: DAILY_VARIABLES[n] for n in daily}}
        payload["daily"] = {"time": times, **series}
    _apply_data_fault(payload, request.fault)
    return Response.json(200, payload)


def _header(latitude: float, longitude: float, zone: ZoneInfo, offset: timedelta) -> dict:
    cell_lat, cell_lon = _snap(latitude, 0.1), _snap(longitude, 0.1)
    return {
        "latitude": cell_lat,
        "longitude": cell_lon,
        "generationtime_ms": 0.0450611114501953,
        "utc_offset_seconds": int(offset.total_seconds()),
        "timezone": zone.key.replace("Etc/", "") if zone.key.startswith("Etc/") else zone.key,
        "timezone_abbreviation": abbreviation(offset),
        "elevation": round(10 + 90 * (_noise("elevation", cell_lat, cell_lon) + 1) / 2, 1),
    }


def _handle_forecast_runs(request, live: bool):
    """The previous-runs API (`live` False) and the live forecast API (`live` True): hourly values only,
    `start_date`/`end_date` or `past_days`/`forecast_days`, the same layout and time labels as the other
    forecast APIs ("same response format and time-zone behaviour as the forecast API").

    Previous runs: `<variable>_previous_dayN` at hour t is the run made N*24 h before t; null when that
    run is after the stand-in's clock (not made yet) or before collection began (January 2024). The
    plain variable is Day 0, close to measurements (the observed value). Live: the run made now (the
    stand-in's clock), for the hours of today-past_days .. today+forecast_days; the error grows with
    the lead in days ceil((t - now) / 24 h); past hours are Day 0.
    """
    query = request.query
    latitude = _float_param(query, "latitude", -90, 90)
    longitude = _float_param(query, "longitude", -180, 180)
    clock = now(request.config)
    now_day = today(request.config)
    if "start_date" in query or "end_date" in query:
        start, end = _date_param(query, "start_date"), _date_param(query, "end_date")
        if end < start:
            raise BadRequest("End-date must be larger or equals than start-date")
    else:
        try:
            past = int(query.get("past_days") or 0)
            ahead = int(query.get("forecast_days") or 7)
        except ValueError:
            raise BadRequest("Cannot initialize Int from invalid String value for key past_days or "
                             "forecast_days") from None
        if not 0 <= past <= LIVE_PAST_DAYS:
            raise BadRequest(f"Past days is invalid. Allowed range 0 to {LIVE_PAST_DAYS}.")
        if not 0 <= ahead <= 16:
            raise BadRequest("Forecast days is invalid. Allowed range 0 to 16.")
        start, end = now_day - timedelta(days=past), now_day + timedelta(days=max(ahead - 1, 0))
    first_day = now_day - timedelta(days=LIVE_PAST_DAYS) if live else PREVIOUS_RUNS_FIRST_DAY
    last_day = now_day + timedelta(days=15 if live else 16)
    for value, name in ((start, "start_date"), (end, "end_date")):
        if not first_day <= value <= last_day:
            raise BadRequest(
                f"Parameter '{name}' is out of allowed range from {first_day.isoformat()} to {last_day.isoformat()}"
            )
    if "daily" in query:
        raise BadRequest("The stand-in serves hourly variables only on this API")
    hourly = _variables(query, "hourly", HOURLY_VARIABLES if live else PREVIOUS_RUNS_VARIABLES)
    zone = _timezone(query, latitude, longitude)
    offset = fixed_offset(zone, now_day)
    unixtime = query.get("timeformat", "iso8601") == "unixtime"
    marker = marker_after(request.config)
    payload = _header(latitude, longitude, zone, offset)
    labels = [(start + timedelta(days=n), hour) for n in range((end - start).days + 1) for hour in range(24)]
    moments = [datetime(d.year, d.month, d.day, hour, tzinfo=UTC) - offset for d, hour in labels]

    def value(moment: datetime, name: str) -> float | None:
        base, lead = _previous_day(name)
        if live:
            lead = max(0, math.ceil((moment - clock) / timedelta(days=1)))
            run = clock
        else:
            run = moment - timedelta(days=lead)
            if lead and (run > clock or run < PREVIOUS_RUNS_COLLECTED_FROM):
                return None  # not made yet, or made before collection began
        if marker is not None and run > marker:
            return MARKER_VALUE
        observed = HOURLY_MODELS[base](latitude, longitude, moment, "best_match")
        return forecast_error(latitude, longitude, moment, lead, base, observed)

    if hourly:
        payload["hourly_units"] = {"time": "unixtime" if unixtime else "iso8601",
                                   **{n: HOURLY_VARIABLES[_previous_day(n)[0]] for n in hourly}}
        payload["hourly"] = {"time": ([int(m.timestamp()) for m in moments] if unixtime
                                      else [f"{d.isoformat()}T{hour:02d}:00" for d, hour in labels]),
                             **{name: [value(m, name) for m in moments] for name in hourly}}
    _apply_data_fault(payload, request.fault)
    return Response.json(200, payload)


def _apply_data_fault(payload: dict, fault: str | None) -> None:
    block = payload.get("hourly") or payload.get("daily")
    if not fault or block is None:
        return
    values = [key for key in block if key != "time"]
    if fault == "unequal_lengths":
        block[values[0]] = block[values[0]][:-1]
    elif fault == "kelvin":
        # Synthetic (Open-Meteo has no such mode): a unit glitch upstream - temperatures in kelvin under
        # a °C label - well-formed, so only a plausibility check on the values can catch it.
        for key in values:
            if key.startswith("temperature"):
                block[key] = [None if v is None else round(v + 273.15, 2) for v in block[key]]
    elif fault == "all_null":
        for key in values:
            block[key] = [None] * len(block[key])
