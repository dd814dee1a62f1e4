"""NYC taxi demand against the weather, per New York calendar day (nyc_taxi_daily_weather).

For each month nyc_taxi_ingestion loaded (named in its yellow_taxi_trips asset events), one row per
New York calendar day of that month with trips: the trips, total and mean fare and mean distance of
the month's TLC file, and that day's hourly 2 m temperature (min / mean / max) and precipitation
(sum) from the Open-Meteo archive - then a chart of the month in S3.

Days and time zones:
- TLC pickup times are New York wall-clock times (naive timestamps), so a trip's day is its
  pickup's date. Only the trips of the month's own file (`data_month`) whose pickup falls on a day of
  that month count: real files carry a few pickups of other months or years, which are counted apart
  (logged), never attributed to a day - a day's numbers then never depend on which other months were
  loaded, or in which order.
- Weather hours are asked for in GMT and placed with zoneinfo (include/open_meteo.py: Open-Meteo
  labels a whole answer with one offset, no DST). A New York day is [local midnight, next local
  midnight): 24 hours, 23 on the spring-forward day, 25 on the fall-back day. Temperature is an
  instant value at each hour: the day's hours are the instants inside it. Precipitation is the "sum
  of the preceding hour" (Open-Meteo's docs): the value labelled 01:00 fell from 00:00 to 01:00, so a
  day's precipitation is the values labelled from 01:00 to the next midnight (included).
- A day whose weather has a missing (null) hour fails the month: no aggregate over part of a day.

Gated and idempotent per month: the month's days are staged in taxi_daily_weather_staged, checked
there (plausible New York weather, trips adding up to the month's), and only then deleted and
inserted again in taxi_daily_weather, in one transaction, under an advisory lock per month (two
runs of one month - a re-load while the previous build runs - wait for each other instead of
colliding on the key).
"""

from __future__ import annotations

import logging
import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from airflow.sdk.exceptions import AirflowFailException

from include.nyc_taxi import MONTH_PATTERN
from include.nyc_taxi import TABLE as TRIPS_TABLE
from include.weather import NYC_LATITUDE, NYC_LONGITUDE, S3_CONN_ID, WEATHER_BUCKET

log = logging.getLogger(__name__)

DAG_ID = "nyc_taxi_daily_weather"
TABLE = "taxi_daily_weather"
STAGED_TABLE = "taxi_daily_weather_staged"
NYC_TIMEZONE = "America/New_York"
REPORT_PREFIX = "reports/taxi_daily_weather/"
HOURLY_VARIABLES = ["temperature_2m", "precipitation"]
HOUR = timedelta(hours=1)
# pg_advisory_xact_lock(class, YYYYMM): one build of a month at a time (the two-int key space does not
# overlap the warehouse DDL lock's single bigint key).
MONTH_LOCK_CLASS = 731_120
HOW_TO_TRIGGER = (
    "Trigger it with the `month` param (YYYY-MM; UI: the trigger form; CLI: `airflow dags trigger "
    "nyc_taxi_daily_weather --conf '{\"month\": \"2021-03\"}'`), or load a month with nyc_taxi_ingestion: its "
    "yellow_taxi_trips asset event names the month and triggers this DAG.")


def month_bounds(month: str) -> tuple[date, date]:
    """First day of the month and first day of the next one."""
    if not re.match(MONTH_PATTERN, month or ""):
        raise AirflowFailException(f"{month!r} is not a month: use YYYY-MM, e.g. 2021-03")
    year, mon = int(month[:4]), int(month[5:])
    return date(year, mon, 1), date(year + mon // 12, mon % 12 + 1, 1)


def report_key(month: str) -> str:
    return f"{REPORT_PREFIX}{month}.svg"


# -- which months a run builds ---------------------------------------------------------------------

def _event_month(event) -> str | None:
    month = (getattr(event, "extra", None) or {}).get("month")
    return month if isinstance(month, str) and re.match(MONTH_PATTERN, month) else None


def _describe(event) -> str:
    return (f"{getattr(event, 'source_dag_id', None)}/{getattr(event, 'source_run_id', None)} at "
            f"{getattr(event, 'timestamp', None)} extra={getattr(event, 'extra', None)!r}")


def months_of_run(triggering_events, later_events=(), month: str | None = None) -> list[str]:
    """The months a run builds, oldest first, each once.

    - `month` (the param of a manual run): that month only.
    - Else every month named (extra {"month": "YYYY-MM"}) by the run's triggering yellow_taxi_trips
      events - several when loads queued up while no run was started - and by `later_events`: the
      asset's events after the newest triggering one, up to now. Airflow 3.3 starts the next run
      only for the events up to the first one queued after a run was created (apache/airflow#56050:
      with a run active, later events wait for yet another event); reading them here means the last
      month of a catch-up is built without waiting for a load that may never come. A month built
      twice is simply replaced by the same rows.
    """
    if month:
        month_bounds(month)
        return [month]
    triggering = list(triggering_events or [])
    if not triggering:
        raise AirflowFailException(f"this run has neither yellow_taxi_trips asset events nor the `month` param. "
                                   f"{HOW_TO_TRIGGER}")
    events = triggering + list(later_events or [])
    months = sorted({m for m in map(_event_month, events) if m})
    for event in triggering:
        log.info("triggering event: %s", _describe(event))
    for event in later_events or []:
        log.info("event after the triggering ones (built now rather than by a run that may not come): %s",
                 _describe(event))
    unnamed = [event for event in events if not _event_month(event)]
    if unnamed:
        log.warning("%d yellow_taxi_trips event(s) name no month (extra {'month': 'YYYY-MM'}) and are ignored: %s",
                    len(unnamed), "; ".join(map(_describe, unnamed)))
    if not months:
        raise AirflowFailException(f"none of the {len(events)} yellow_taxi_trips event(s) of this run names a month "
                                   f"(extra {{'month': 'YYYY-MM'}}): {'; '.join(map(_describe, events))}. "
                                   f"{HOW_TO_TRIGGER}")
    log.info("months to build: %s", ", ".join(months))
    return months


# -- weather -----------------------------------------------------------------------------------------

def aggregate_weather(moments: list[datetime], temperature: list, precipitation: list, start: datetime,
                      end: datetime, zone: ZoneInfo) -> dict[date, dict]:
    """Per local day of [start, end): temperature min/mean/max over the hours that start inside it,
    precipitation summed over the hours that end inside it (values labelled start+1h .. end), and the
    number of hours. `moments` are UTC instants covering [start, end]."""
    temps: dict[date, list] = {}
    rain: dict[date, list] = {}
    for moment, temp, precip in zip(moments, temperature, precipitation, strict=True):
        if start <= moment < end:
            temps.setdefault(moment.astimezone(zone).date(), []).append(temp)
        if start < moment <= end:
            rain.setdefault((moment - HOUR).astimezone(zone).date(), []).append(precip)
    incomplete = [day.isoformat() for day, values in temps.items()
                  if None in values or None in rain.get(day, [None]) or len(rain[day]) != len(values)]
    if incomplete:
        from include.open_meteo import OpenMeteoBadResponse  # noqa: PLC0415

        raise OpenMeteoBadResponse(f"Open-Meteo has no complete hourly weather for {', '.join(incomplete)}: an "
                                   "aggregate over part of a day would be wrong")
    return {day: {"temperature_min": min(values), "temperature_mean": sum(values) / len(values),
                  "temperature_max": max(values), "precipitation": round(sum(rain[day]), 3),
                  "weather_hours": len(values)}
            for day, values in temps.items()}


def fetch_month_weather(month: str, latitude: float = NYC_LATITUDE, longitude: float = NYC_LONGITUDE,
                        session=None) -> dict[date, dict]:
    """The month's New York days with their weather, from one archive request in GMT."""
    from include.open_meteo import (  # noqa: PLC0415
        ARCHIVE_CONN_ID,
        ARCHIVE_ENDPOINT,
        fetch_utc_hourly,
        local_day_bounds,
    )

    zone = ZoneInfo(NYC_TIMEZONE)
    first, after = month_bounds(month)
    start, end = local_day_bounds(first, after - timedelta(days=1), zone)
    # One hour more than the days: precipitation labelled at the last midnight fell on the last day.
    moments, values = fetch_utc_hourly(ARCHIVE_CONN_ID, ARCHIVE_ENDPOINT, latitude, longitude, start, end + HOUR,
                                       HOURLY_VARIABLES, session)
    weather = aggregate_weather(moments, values["temperature_2m"], values["precipitation"], start, end, zone)
    days = sorted(weather)
    if days[0] != first or days[-1] != after - timedelta(days=1) or len(days) != (after - first).days:
        raise AirflowFailException(f"weather for {month} covers {days[0]}..{days[-1]} ({len(days)} days)")
    return weather


# -- the table ---------------------------------------------------------------------------------------

def build_month(month: str, conn_id: str = "warehouse_db", weather: dict | None = None) -> int:
    """Replace the month's days in taxi_daily_weather once they pass their checks
    (include/quality.py, taxi_daily_weather_checks); returns the rows written (days with trips)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    from include.quality import failed_checks, taxi_daily_weather_checks  # noqa: PLC0415
    from include.warehouse import apply_ddl, read_sql, transaction  # noqa: PLC0415

    first, after = month_bounds(month)
    # Weather first, outside any transaction: a slow API holds no lock on the warehouse.
    weather = weather if weather is not None else fetch_month_weather(month)
    params = {"data_month": first, "first_day": first, "after_day": after}
    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        apply_ddl(conn, TABLE)
        with transaction(conn), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", [MONTH_LOCK_CLASS, first.year * 100 + first.month])
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", [TRIPS_TABLE])
            if not cur.fetchone()[0]:
                raise AirflowFailException(f"{TRIPS_TABLE} does not exist: load {month} with nyc_taxi_ingestion first")
            cur.execute(read_sql(f"{TABLE}/trips_by_day.sql"), params)
            by_day = cur.fetchall()
            outside = sum(trips for day, trips, *_ in by_day if day is None)
            days = [row for row in by_day if row[0] is not None]
            if not days:
                raise AirflowFailException(f"{TRIPS_TABLE} holds no trips with a pickup in {month} (data_month "
                                           f"{first}; {outside} outside it): load the month with nyc_taxi_ingestion")
            if outside:
                log.info("%d trip(s) of the %s file have a pickup outside the month: not counted", outside, month)
            rows = [{"day": day, "trips": trips, "total_fare": total_fare, "mean_fare": mean_fare,
                     "mean_distance": mean_distance, **weather[day]}
                    for day, trips, total_fare, mean_fare, mean_distance in days]
            # Staged, checked, then published - all under the month's lock; a month that fails its
            # checks stays staged (committed) for inspection and never reaches the table.
            cur.execute(read_sql(f"{TABLE}/clear_staged_month.sql"), params)
            cur.executemany(read_sql(f"{TABLE}/stage_day.sql"), rows)
            failures = failed_checks(cur, STAGED_TABLE, "day >= %(first_day)s AND day < %(after_day)s", params,
                                     taxi_daily_weather_checks(sum(r["trips"] for r in rows)))
            if not failures:
                cur.execute(read_sql(f"{TABLE}/delete_month.sql"), params)
                cur.execute(read_sql(f"{TABLE}/publish_month.sql"), params)
                cur.execute(read_sql(f"{TABLE}/clear_staged_month.sql"), params)
    finally:
        conn.close()
    if failures:
        raise AirflowFailException("\n".join([
            f"Data-quality checks failed on {STAGED_TABLE} where day >= '{first}' AND day < '{after}' ({month}). "
            f"Those rows stay in {STAGED_TABLE} for inspection; {TABLE} was not changed (the month is published "
            "only after every check passed).", *failures]))
    log.info("%s: %d days of %s written (%d trips)", TABLE, len(rows), month, sum(r["trips"] for r in rows))
    return len(rows)


def month_rows(month: str, conn_id: str = "warehouse_db") -> list[tuple]:
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    from include.warehouse import read_sql  # noqa: PLC0415

    first, after = month_bounds(month)
    return PostgresHook(postgres_conn_id=conn_id).get_records(
        read_sql(f"{TABLE}/month_rows.sql"), parameters={"first_day": first, "after_day": after})


# -- the chart ---------------------------------------------------------------------------------------

def chart_svg(month: str, rows: list[tuple]) -> bytes:
    """Daily trips (bars) against the daily mean temperature (line; min-max band) of the month, as
    SVG. Byte-identical for the same rows: fixed hash salt, no date in the metadata, text as paths."""
    import io  # noqa: PLC0415

    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")  # no display, whatever the environment says
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    first, after = month_bounds(month)
    days = [row[0].day for row in rows]
    trips = [row[1] for row in rows]
    t_min, t_mean, t_max = ([row[i] for row in rows] for i in (2, 3, 4))
    with matplotlib.rc_context({"svg.hashsalt": f"{DAG_ID}-{month}", "svg.fonttype": "path"}):
        fig = Figure(figsize=(11, 5), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.bar(days, trips, color="#f2b705", label="trips (pickups that day)")
        ax.set_xlim(0.4, (after - first).days + 0.6)
        ax.set_xticks(range(1, (after - first).days + 1))
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel(f"day of {first:%B %Y} (New York)")
        ax.set_ylabel("yellow-taxi trips")
        temp = ax.twinx()
        temp.fill_between(days, t_min, t_max, color="#1f77b4", alpha=0.15, label="temperature min-max")
        temp.plot(days, t_mean, color="#1f77b4", marker="o", markersize=3, label="mean temperature")
        temp.set_ylabel("temperature at 2 m, °C")
        handles = [h for a in (ax, temp) for h in a.get_legend_handles_labels()[0]]
        temp.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, fontsize=8,
                    frameon=False)
        fig.suptitle(f"NYC yellow taxi trips and temperature per day, {first:%B %Y}")
        out = io.BytesIO()
        fig.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


def render_month_chart(month: str, conn_id: str = "warehouse_db", s3_conn_id: str = S3_CONN_ID) -> dict:
    """Chart the month's stored rows to s3://weather-data/reports/taxi_daily_weather/<YYYY-MM>.svg."""
    from include.object_storage import write_object  # noqa: PLC0415

    rows = month_rows(month, conn_id)
    if not rows:
        raise AirflowFailException(f"{TABLE} has no rows for {month}: nothing to chart")
    uri = write_object(chart_svg(month, rows), WEATHER_BUCKET, report_key(month), s3_conn_id)
    log.info("chart of %s (%d days) written to %s", month, len(rows), uri)
    return {"month": month, "rows": len(rows), "key": report_key(month)}
