"""The weather pipeline writing its CSV to S3 through Airflow's object storage (lab 12, ex. 4)."""

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from include.dag_defaults import DEFAULT_ARGS
from include.open_meteo import fetch_hourly_temperatures
from include.weather import FETCH_KWARGS_FROM_PARAMS, clip_temperatures, weather_params, write_csv_object

with DAG(
    dag_id="weather_data_s3",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    params=weather_params(),
    render_template_as_native_obj=True,
    tags=["weather", "open-meteo", "s3", "lab12"],
    doc_md="""
### Weather to S3
Open-Meteo archive hourly temperature (params: location, dates) -> clipped to [-20, 50] °C ->
`s3://weather-data/hourly_temperature/<logical date>.csv` through `aws_default`. Re-running a run
overwrites its own object; nothing else is written.
""",
) as dag:
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
    load_csv_to_s3 = PythonOperator(
        task_id="load_csv_to_s3",
        python_callable=write_csv_object,
        op_kwargs={"rows": transform_clip_temperatures.output},  # dag_run comes from the task context
    )

    extract_hourly_temperatures >> transform_clip_temperatures >> load_csv_to_s3
