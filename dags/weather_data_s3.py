"""The weather pipeline writing its CSV to S3 through Airflow's object storage (lab 12, ex. 4)."""

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from include.assets import WEATHER_HOURLY_CSV
from include.dag_defaults import DEFAULT_ARGS
from include.runs import run_stamp
from include.weather import extract_and_clip_operators, s3_key, weather_params, write_csv_object


def load_csv_to_s3_and_record(rows: dict, dag_run, params, outlet_events) -> str:
    """write_csv_object, then the extra of the asset event the task emits: the object's key, its
    rows and the place and days they are for."""
    uri = write_csv_object(rows, dag_run)
    outlet_events[WEATHER_HOURLY_CSV].extra = {
        "key": s3_key(run_stamp(dag_run)), "rows": len(rows["time"]),
        **{name: params[name] for name in ("latitude", "longitude", "start_date", "end_date", "timezone")},
    }
    return uri


with DAG(
    dag_id="weather_data_s3",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    params=weather_params(),
    render_template_as_native_obj=True,  # params reach the callables as numbers, not strings
    tags=["weather", "open-meteo", "s3", "lab12"],
    doc_md="""
### Weather to S3
Open-Meteo archive hourly temperature (params: location, dates) -> clipped to [-20, 50] °C ->
`s3://weather-data/hourly_temperature/<logical date>.csv` through `aws_default`. Re-running a run
overwrites its own object; nothing else is written. `load_csv_to_s3` emits an event of the asset
`weather_data.hourly_temperature` (extra: key, rows, the params).
""",
) as dag:
    # extract_hourly_temperatures >> transform_clip_temperatures (PythonOperators, include/weather.py)
    _, transform_clip_temperatures = extract_and_clip_operators()
    load_csv_to_s3 = PythonOperator(
        task_id="load_csv_to_s3",
        python_callable=load_csv_to_s3_and_record,
        op_kwargs={"rows": transform_clip_temperatures.output},  # the rest comes from the task context
        outlets=[WEATHER_HOURLY_CSV],
    )
    transform_clip_temperatures >> load_csv_to_s3
