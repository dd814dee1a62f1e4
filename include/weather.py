"""Weather pipeline steps: clip hourly temperatures, write them as CSV (local file or S3).

Used by weather_data_classes_api, weather_data_taskflow_api and weather_data_s3. Heavy imports
(pandas, the object-storage stack) happen inside the functions, never when a DAG file is parsed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from include.open_meteo import DEFAULT_TIMEZONE, fetch_hourly_temperatures
from include.runs import run_stamp

# The lab's defaults: New York City, calendar year 2025 (New York calendar days), local time.
NYC_LATITUDE = 40.7143
NYC_LONGITUDE = -74.006
DEFAULT_START_DATE = "2025-01-01"
DEFAULT_END_DATE = "2025-12-31"
# Physically plausible range for New York; values outside are sensor or model artefacts.
TEMPERATURE_MIN_C = -20.0
TEMPERATURE_MAX_C = 50.0

WEATHER_BUCKET = "weather-data"
S3_CONN_ID = "aws_default"
# time: local wall-clock time with its UTC offset ("2025-07-01T12:00-04:00"), time_utc: the same
# instant in UTC - unambiguous even in the repeated hour of the fall-back night.
CSV_COLUMNS = ("time", "time_utc", "temperature")


def weather_params() -> dict:
    """DAG params: location and date range, editable when triggering a run."""
    from airflow.sdk import Param  # noqa: PLC0415

    return {
        "latitude": Param(NYC_LATITUDE, type="number", minimum=-90, maximum=90, description="Latitude, degrees"),
        "longitude": Param(NYC_LONGITUDE, type="number", minimum=-180, maximum=180,
                           description="Longitude, degrees"),
        "start_date": Param(DEFAULT_START_DATE, type="string", format="date",
                            description="First local calendar day (in `timezone`)"),
        "end_date": Param(DEFAULT_END_DATE, type="string", format="date",
                          description="Last local calendar day (in `timezone`), included"),
        "timezone": Param(DEFAULT_TIMEZONE, type="string",
                          description="IANA zone the days and local times are in (DST-aware), 'GMT', or 'auto' "
                                      "for the location's own zone"),
    }


# op_kwargs for fetch_hourly_temperatures in classic operators: rendered from the run's params
# (with render_template_as_native_obj=True the numbers stay numbers).
FETCH_KWARGS_FROM_PARAMS = {
    name: f"{{{{ params.{name} }}}}" for name in ("latitude", "longitude", "start_date", "end_date", "timezone")
}


def extract_and_clip_operators():
    """The first two steps of the classic-operator weather DAGs, created in the current DAG:
    extract_hourly_temperatures -> transform_clip_temperatures. Returns both operators; the
    DAG adds its own load step (local file or S3) after the second."""
    from airflow.providers.standard.operators.python import PythonOperator  # noqa: PLC0415

    extract_hourly_temperatures = PythonOperator(
        task_id="extract_hourly_temperatures",
        python_callable=fetch_hourly_temperatures,
        op_kwargs=FETCH_KWARGS_FROM_PARAMS,
        show_return_value_in_logs=False,  # ~9k rows: keep them out of the task log
    )
    transform_clip_temperatures = PythonOperator(
        task_id="transform_clip_temperatures",
        python_callable=clip_temperatures,
        op_kwargs={"hourly": extract_hourly_temperatures.output},
        show_return_value_in_logs=False,
    )
    extract_hourly_temperatures >> transform_clip_temperatures
    return extract_hourly_temperatures, transform_clip_temperatures


def clip_temperatures(hourly: dict[str, list], lower: float = TEMPERATURE_MIN_C,
                      upper: float = TEMPERATURE_MAX_C) -> dict[str, list]:
    """Clip every temperature into [lower, upper]; missing values stay missing (None); the time
    columns pass through unchanged."""
    import pandas as pd  # noqa: PLC0415

    temperatures = pd.to_numeric(pd.Series(hourly["temperature"], dtype=object), errors="raise")
    clipped = temperatures.clip(lower=lower, upper=upper)
    return {**{k: v for k, v in hourly.items() if k != "temperature"},
            "temperature": [None if pd.isna(value) else float(value) for value in clipped]}


def to_csv_bytes(rows: dict[str, list]) -> bytes:
    """CSV with a `time,time_utc,temperature` header; missing temperatures are empty fields."""
    import pandas as pd  # noqa: PLC0415

    frame = pd.DataFrame({column: rows[column] for column in CSV_COLUMNS})
    return frame.to_csv(index=False, lineterminator="\n").encode()


def output_dir() -> Path:
    """Where the local-file DAGs write: $WEATHER_OUTPUT_DIR, else $AIRFLOW_HOME/data/weather."""
    configured = os.environ.get("WEATHER_OUTPUT_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("AIRFLOW_HOME", tempfile.gettempdir())) / "data" / "weather"


def write_csv_file(rows: dict[str, list], dag_run, directory: Path | None = None) -> str:
    """Write `<dir>/<dag_id>/<run stamp>.csv` atomically (temp file + rename): a reader never sees
    a half-written file and a re-run replaces the file instead of adding another.

    `dag_run` is the run from the task context (Airflow passes it by name)."""
    target = (directory or output_dir()) / dag_run.dag_id / f"{run_stamp(dag_run)}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    data = to_csv_bytes(rows)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the file from other users and tools
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(target)


def s3_key(stamp: str) -> str:
    return f"hourly_temperature/{stamp}.csv"


def write_csv_object(rows: dict[str, list], dag_run, bucket: str = WEATHER_BUCKET,
                     conn_id: str = S3_CONN_ID) -> str:
    """Upload the CSV to `s3://<bucket>/hourly_temperature/<run stamp>.csv` through Airflow's
    object storage. One PUT of the whole body: the object appears complete or not at all, and a
    re-run overwrites the same key."""
    from include.object_storage import write_object  # noqa: PLC0415

    return write_object(to_csv_bytes(rows), bucket, s3_key(run_stamp(dag_run)), conn_id)
