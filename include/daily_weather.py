"""Daily New York temperature range, one week per run (backfilling_dataset_gathering)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from include.open_meteo import fetch_daily_temperature_range
from include.weather import NYC_LATITUDE, NYC_LONGITUDE, S3_CONN_ID, WEATHER_BUCKET

# The lab's backfill: January 2025, one run per 7 days; the last week reaches into February.
WEEK = timedelta(days=7)
WEEK_STARTS = tuple((date(2025, 1, 1) + WEEK * k).isoformat() for k in range(5))

NYC_TIMEZONE = "America/New_York"  # daily min/max are per New York calendar day
# date: the New York calendar day; day_start/day_end: its local midnights with their UTC offsets
# (a DST day is 23 or 25 hours long: `hours`); min/max over exactly those hours.
DAILY_COLUMNS = ("date", "temperature_min", "temperature_max", "day_start", "day_end", "hours")


def weekly_timetable():
    """A run for each week of WEEK_STARTS (00:00 UTC), and none after - a list of events instead of
    a 7-day interval schedule with an end_date, because Airflow gives a run whose logical date lies
    after the end_date no task at all: the UI's Trigger (logical date: now) made a green run that
    did nothing. Airflow core's EventsTimetable: the Task SDK's twin does not serialize in Airflow
    3.3.2 (its encoder drops `_summary`, which the core decoder requires)."""
    from airflow.timetables.events import EventsTimetable  # noqa: PLC0415

    events = [datetime.fromisoformat(day).replace(tzinfo=UTC) for day in WEEK_STARTS]
    return EventsTimetable(events, presorted=True,
                           description=f"Every 7 days from {WEEK_STARTS[0]}: {len(WEEK_STARTS)} weeks")


def week_of_run(logical_date: datetime | None, week_start: str | None = None) -> tuple[datetime, datetime]:
    """[start, end) of the week a run gathers: the `week_start` param when given, else the week
    starting at the run's logical date, which must be one of WEEK_STARTS - anything else fails
    saying how to run it, never a CSV for days outside the backfill."""
    from airflow.sdk.exceptions import AirflowFailException  # noqa: PLC0415

    how_to = (f"This DAG gathers the weeks starting {', '.join(WEEK_STARTS)}. Trigger it with the `week_start` param "
              "set to one of them (UI: the trigger form; CLI: `airflow dags trigger backfilling_dataset_gathering "
              "--conf '{\"week_start\": \"2025-01-08\"}'`), or re-run weeks with `airflow backfill create "
              "--dag-id backfilling_dataset_gathering --from-date 2025-01-01 --to-date 2025-01-31`.")
    if week_start:
        if week_start not in WEEK_STARTS:
            raise AirflowFailException(f"week_start={week_start!r} is not a week of this backfill. {how_to}")
        start = datetime.fromisoformat(week_start).replace(tzinfo=UTC)
    elif logical_date is None:
        raise AirflowFailException(f"this run has neither a logical date nor the `week_start` param. {how_to}")
    else:
        start = logical_date.astimezone(UTC)
        if start.isoformat() not in {f"{day}T00:00:00+00:00" for day in WEEK_STARTS}:
            raise AirflowFailException(f"the run's logical date {start.isoformat()} is not the start of a week of "
                                       f"this backfill. {how_to}")
    return start, start + WEEK


def interval_days(start: datetime, end: datetime) -> tuple[str, str]:
    """First and last calendar day of the data interval [start, end): end is excluded, so
    consecutive intervals never share a day."""
    first = start.date()
    last = (end - timedelta(microseconds=1)).date()
    if last < first:
        raise ValueError(f"empty data interval {start.isoformat()} .. {end.isoformat()}")
    return first.isoformat(), last.isoformat()


def fetch_interval_temperature_range(start: datetime, end: datetime, latitude: float = NYC_LATITUDE,
                                     longitude: float = NYC_LONGITUDE, timezone: str = NYC_TIMEZONE) -> dict:
    """Daily min/max for the New York calendar days of [start, end) (their UTC dates)."""
    first, last = interval_days(start, end)
    daily = fetch_daily_temperature_range(latitude, longitude, first, last, timezone)
    if daily["date"][0] != first or daily["date"][-1] != last or len(daily["date"]) != len(set(daily["date"])):
        raise ValueError(f"Open-Meteo answered days {daily['date'][0]}..{daily['date'][-1]}, asked {first}..{last}")
    incomplete = [d for d, lo in zip(daily["date"], daily["temperature_min"], strict=True) if lo is None]
    if incomplete:
        from include.open_meteo import OpenMeteoBadResponse  # noqa: PLC0415

        raise OpenMeteoBadResponse(f"Open-Meteo has no complete hourly data yet for {', '.join(incomplete)}: "
                                   "a day's min/max over part of it would be wrong")
    return {**daily, "first_day": first, "last_day": last}


def interval_key(daily: dict) -> str:
    return f"daily_temperature_range/{daily['first_day'].replace('-', '')}_{daily['last_day'].replace('-', '')}.csv"


def write_interval_csv_to_s3(daily: dict, bucket: str = WEATHER_BUCKET, conn_id: str = S3_CONN_ID) -> str:
    """One CSV per interval, keyed by its days: a re-run or backfill of the week overwrites it."""
    import pandas as pd  # noqa: PLC0415

    from include.object_storage import write_object  # noqa: PLC0415

    frame = pd.DataFrame({column: daily[column] for column in DAILY_COLUMNS})
    return write_object(frame.to_csv(index=False, lineterminator="\n").encode(), bucket, interval_key(daily), conn_id)
