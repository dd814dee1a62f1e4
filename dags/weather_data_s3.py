"""The weather pipeline writing its CSV to S3 through Airflow's object storage (lab 12, ex. 4)."""

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from include.dag_defaults import DEFAULT_ARGS
from include.weather import extract_and_clip_operators, weather_params, write_csv_object

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
overwrites its own object; nothing else is written.
""",
) as dag:
    # extract_hourly_temperatures >> transform_clip_temperatures (PythonOperators, include/weather.py)
    _, transform_clip_temperatures = extract_and_clip_operators()
    load_csv_to_s3 = PythonOperator(
        task_id="load_csv_to_s3",
        python_callable=write_csv_object,
        op_kwargs={"rows": transform_clip_temperatures.output},  # dag_run comes from the task context
    )
    transform_clip_temperatures >> load_csv_to_s3
