"""Daily temperature range per data interval (backfilling_dataset_gathering)."""

from __future__ import annotations

from datetime import datetime, timedelta

from include.open_meteo import fetch_daily_temperature_range
from include.runs import require_data_interval
from include.weather import NYC_LATITUDE, NYC_LONGITUDE, S3_CONN_ID, WEATHER_BUCKET

NYC_TIMEZONE = "America/New_York"  # daily min/max are per local calendar day
DAILY_COLUMNS = ("date", "temperature_min", "temperature_max")


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
    start, end = require_data_interval(start, end)
    first, last = interval_days(start, end)
    daily = fetch_daily_temperature_range(latitude, longitude, first, last, timezone)
    if daily["date"][0] != first or daily["date"][-1] != last or len(daily["date"]) != len(set(daily["date"])):
        raise ValueError(f"Open-Meteo answered days {daily['date'][0]}..{daily['date'][-1]}, asked {first}..{last}")
    return {**daily, "first_day": first, "last_day": last}


def interval_key(daily: dict) -> str:
    return f"daily_temperature_range/{daily['first_day'].replace('-', '')}_{daily['last_day'].replace('-', '')}.csv"


def write_interval_csv_to_s3(daily: dict, bucket: str = WEATHER_BUCKET, conn_id: str = S3_CONN_ID) -> str:
    """One CSV per interval, keyed by its days: a re-run or backfill of the week overwrites it."""
    import pandas as pd  # noqa: PLC0415
    from airflow.sdk import ObjectStoragePath  # noqa: PLC0415

    frame = pd.DataFrame({column: daily[column] for column in DAILY_COLUMNS})
    key = interval_key(daily)
    ObjectStoragePath(f"s3://{conn_id}@{bucket}/{key}").write_bytes(
        frame.to_csv(index=False, lineterminator="\n").encode()
    )
    return f"s3://{bucket}/{key}"
