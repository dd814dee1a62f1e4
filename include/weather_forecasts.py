"""Weather *as it was forecast at an issue instant*, per New York day, for the weekly taxi-demand forecast.

A forecast issued at instant T (Saturday 06:00 America/New_York) for the days after it may only use
weather forecasts that existed at T - no look-ahead. Two Open-Meteo APIs give such forecasts:

- Previous Model Runs API (connection `open_meteo_previous_runs`, `previous-runs-api.open-meteo.com`,
  `/v1/forecast`; open-meteo.com/en/docs/previous-runs-api): hourly variables with the suffix
  `_previous_dayN` (N = 1..7) hold what the model forecast N*24 h before each hour ("Day 1 as a glimpse
  24 hours back, and Day 2 as a 48-hour rewind"); Day 0 is the latest forecast, close to measurements.
  "We began collecting past model run data in January 2024" (GFS 2 m temperature from April 2021, but
  no precipitation), so issue instants before 2024-01-02 have no forecast as issued: an error says so.
  Same response format and time-zone behaviour as the forecast API: asked for in GMT, as every client
  of the project does (include/open_meteo.py).
- Forecast API (connection `open_meteo_live_forecast`, `api.open-meteo.com`, `/v1/forecast`;
  open-meteo.com/en/docs): today's forecast, 7 days by default and up to 16 (`forecast_days`), also
  `start_date` / `end_date` - the forecast as of now.

N selection (previous runs). For an hour t the value must come from a run made at or before T:
t - N*24h <= T, i.e. N >= ceil((t - T) / 24h). The smallest such N (at least 1) is taken: the freshest
forecast allowed. Precipitation is labelled with the END of its hour (the sum of the preceding hour,
include/taxi_weather.py), so its label is the t of the rule.

Horizon rule. The hours of the 7th day after T + 7 days would need N = 8, which does not exist: for
those hours the N = 7 forecast of the same hour one day earlier (t - 24 h) is used - made at
t - 24h - 7*24h <= T, so known at T. A day later than that (an hour after T + 8 days) has no forecast
known at T: an error.

Which API (`forecast_source(issue_instant, now)`):
- now < T: an error (a forecast cannot be issued from the future).
- now - T <= LIVE_WINDOW (6 h): `live_forecast`. The issue is happening now (the weekly run at its
  issue instant, or a few hours late): the forecast API's answer IS the forecast of the issue instant.
  The previous-runs API may not hold the newest runs before T yet (a run reaches it hours after its
  start). The window is short because a run made after T and published before `now` would leak into
  the features; 6 h is one model cycle (00/06/12/18 UTC), below the time a run takes to be computed and
  published.
- otherwise: `previous_runs`, with the N selection above: every selected run was made at or before
  T < now, so it exists; hours still in the future are served as well (the API gives forecasts for up
  to 16 days, open-meteo.com/en/docs/previous-runs-api).

Days and hours are New York days built with include/taxi_weather.aggregate_weather, the same
aggregation as taxi_daily_weather (23/25-hour DST days).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

PREVIOUS_RUNS_CONN_ID = "open_meteo_previous_runs"
LIVE_FORECAST_CONN_ID = "open_meteo_live_forecast"
ENDPOINT = "/v1/forecast"

VARIABLES = ("temperature_2m", "precipitation")
MAX_PREVIOUS_DAY = 7  # _previous_day1 .. _previous_day7 (open-meteo.com/en/docs/previous-runs-api)
# "We began collecting past model run data in January 2024": every run selected for an issue instant T
# is made in (T - 24 h, T], so T must be a day after the start of collection.
PREVIOUS_RUNS_COLLECTED_FROM = datetime(2024, 1, 1, tzinfo=UTC)
FIRST_ISSUE_INSTANT = PREVIOUS_RUNS_COLLECTED_FROM + timedelta(days=1)
LIVE_WINDOW = timedelta(hours=6)
LIVE_FORECAST_DAYS = 16  # forecast_days: up to 16 (open-meteo.com/en/docs)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

SOURCE_PREVIOUS_RUNS = "previous_runs"
SOURCE_LIVE_FORECAST = "live_forecast"


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        from include.open_meteo import OpenMeteoRejectedRequest  # noqa: PLC0415

        raise OpenMeteoRejectedRequest(f"{name} {moment.isoformat()} has no time zone: give an aware datetime "
                                       "(e.g. Saturday 06:00 America/New_York)")
    return moment.astimezone(UTC)


def previous_day_for(hour: datetime, issue_instant: datetime) -> tuple[datetime, int]:
    """(source hour, N): which `_previous_dayN` value stands for the UTC hour `hour` in a forecast issued
    at `issue_instant`. The smallest N with hour - N*24h <= issue_instant (at least 1); past N = 7 the
    horizon rule: the N = 7 forecast of hour - 24 h. Raises past the horizon (hour > T + 8 days)."""
    t, issued = _utc(hour, "hour"), _utc(issue_instant, "issue instant")
    n = max(1, math.ceil((t - issued) / DAY))
    if n <= MAX_PREVIOUS_DAY:
        return t, n
    if n == MAX_PREVIOUS_DAY + 1:
        return t - DAY, MAX_PREVIOUS_DAY
    from include.open_meteo import OpenMeteoRejectedRequest  # noqa: PLC0415

    raise OpenMeteoRejectedRequest(
        f"hour {t.isoformat()} is {(t - issued) / HOUR:g} h after the issue instant {issued.isoformat()}: no "
        f"forecast known then reaches it (previous runs go back {MAX_PREVIOUS_DAY} days; the horizon rule covers "
        f"one more day)")


def forecast_source(issue_instant: datetime, now: datetime) -> str:
    """`live_forecast` while now is within LIVE_WINDOW after the issue instant, `previous_runs` after
    that (see the module docstring); an error before it."""
    issued, clock = _utc(issue_instant, "issue instant"), _utc(now, "now")
    if clock < issued:
        from include.open_meteo import OpenMeteoRejectedRequest  # noqa: PLC0415

        raise OpenMeteoRejectedRequest(f"issue instant {issued.isoformat()} is after now ({clock.isoformat()}): "
                                       "the forecasts of that instant do not exist yet")
    return SOURCE_LIVE_FORECAST if clock - issued <= LIVE_WINDOW else SOURCE_PREVIOUS_RUNS


def forecast_days_as_issued(issue_instant: datetime, days: list[date], latitude: float, longitude: float,
                            now: datetime | None = None, session=None) -> list[dict]:
    """Per New York day of `days`: {"day", "lead_days", "temperature_min", "temperature_mean",
    "temperature_max", "precipitation", "source"} from the weather as forecast at `issue_instant`
    (aware datetime), in the order of `days`. `lead_days` = day - the issue instant's New York date.
    `now` (default: the real time) chooses the API (forecast_source). One request in GMT either way.
    Raises an OpenMeteoError naming the cause."""
    from zoneinfo import ZoneInfo  # noqa: PLC0415

    from include.open_meteo import OpenMeteoRejectedRequest, local_day_bounds  # noqa: PLC0415
    from include.taxi_weather import NYC_TIMEZONE  # noqa: PLC0415

    issued = _utc(issue_instant, "issue instant")
    clock = _utc(now, "now") if now is not None else datetime.now(UTC)
    if not days:
        raise OpenMeteoRejectedRequest("no days asked for")
    zone = ZoneInfo(NYC_TIMEZONE)
    wanted = sorted(set(days))
    start, end = local_day_bounds(wanted[0], wanted[-1], zone)
    source = forecast_source(issued, clock)
    if source == SOURCE_LIVE_FORECAST:
        weather = _live_weather(start, end, zone, latitude, longitude, session)
    else:
        weather = _previous_runs_weather(issued, start, end, zone, latitude, longitude, session)
    issue_day = issued.astimezone(zone).date()
    return [{"day": day, "lead_days": (day - issue_day).days,
             **{key: weather[day][key] for key in ("temperature_min", "temperature_mean", "temperature_max",
                                                   "precipitation")},
             "source": source}
            for day in days]


def _live_weather(start: datetime, end: datetime, zone, latitude: float, longitude: float, session) -> dict:
    from include.open_meteo import fetch_utc_hourly  # noqa: PLC0415
    from include.taxi_weather import aggregate_weather  # noqa: PLC0415

    # One hour more than the days: precipitation labelled at the last midnight fell on the last day.
    moments, values = fetch_utc_hourly(LIVE_FORECAST_CONN_ID, ENDPOINT, latitude, longitude, start, end + HOUR,
                                       list(VARIABLES), session)
    return aggregate_weather(moments, values["temperature_2m"], values["precipitation"], start, end, zone)


def _previous_runs_weather(issued: datetime, start: datetime, end: datetime, zone, latitude: float,
                           longitude: float, session) -> dict:
    from include.open_meteo import OpenMeteoBadResponse, OpenMeteoRejectedRequest, fetch_utc_hourly  # noqa: PLC0415
    from include.taxi_weather import aggregate_weather  # noqa: PLC0415

    if issued < FIRST_ISSUE_INSTANT:
        raise OpenMeteoRejectedRequest(
            f"issue instant {issued.isoformat()} is before {FIRST_ISSUE_INSTANT.isoformat()}: Open-Meteo's previous "
            "model runs were collected from January 2024 (open-meteo.com/en/docs/previous-runs-api, Data "
            "Availability), so no forecast as issued then exists")
    # Every hour the days need: temperatures at [start, end), precipitation labelled (start, end].
    hours = [start + k * HOUR for k in range(int((end - start) / HOUR) + 1)]
    picks = [previous_day_for(t, issued) for t in hours]
    ns = sorted({n for _, n in picks})
    first = min(src for src, _ in picks)
    names = [f"{v}_previous_day{n}" for v in VARIABLES for n in ns]
    try:
        moments, values = fetch_utc_hourly(PREVIOUS_RUNS_CONN_ID, ENDPOINT, latitude, longitude, first, end + HOUR,
                                           names, session)
    except OpenMeteoBadResponse as exc:
        if "only null" not in str(exc):
            raise
        raise OpenMeteoBadResponse(f"{exc}: Open-Meteo previous runs have no value for the hours the forecast "
                                   f"issued at {issued.isoformat()} needs - those model runs are not in the "
                                   "archive") from exc
    index = {m: i for i, m in enumerate(moments)}
    chosen: dict[str, list] = {v: [] for v in VARIABLES}
    missing = []
    for t, (src, n) in zip(hours, picks, strict=True):
        for v in VARIABLES:
            value = values[f"{v}_previous_day{n}"][index[src]]
            if value is None:
                missing.append(f"{v}_previous_day{n} at {src.isoformat(timespec='minutes')} (for {t:%Y-%m-%dT%H:%MZ})")
            chosen[v].append(value)
    if missing:
        raise OpenMeteoBadResponse(
            f"Open-Meteo previous runs have no value for {len(missing)} hour(s) the forecast issued at "
            f"{issued.isoformat()} needs, e.g. {'; '.join(missing[:3])}: that model run is not in the archive")
    return aggregate_weather(hours, chosen["temperature_2m"], chosen["precipitation"], start, end, zone)
