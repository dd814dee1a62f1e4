"""Hourly New York temperature from the Open-Meteo archive, clipped, saved as CSV - with
classic operators (lab 12). The same pipeline in TaskFlow style: weather_data_taskflow_api."""

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from include.dag_defaults import DEFAULT_ARGS, LOCAL_FILES_QUEUE
from include.weather import extract_and_clip_operators, weather_params, write_csv_file

with DAG(
    dag_id="weather_data_classes_api",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    params=weather_params(),
    render_template_as_native_obj=True,  # params reach the callables as numbers, not strings
    tags=["weather", "open-meteo", "lab12"],
    doc_md="""
### Weather, class-based operators
Hourly 2 m temperature for the location and date range in the run's params (default: New York,
2025) from the Open-Meteo archive API (`open_meteo_archive` connection), clipped to [-20, 50] °C,
written to `$WEATHER_OUTPUT_DIR/weather_data_classes_api/<logical date>.csv`. The hourly dataset
travels between tasks as XCom, which the object-storage backend keeps in `airflow-xcom`.
""",
) as dag:
    # extract_hourly_temperatures >> transform_clip_temperatures (PythonOperators, include/weather.py)
    _, transform_clip_temperatures = extract_and_clip_operators()
    load_csv_file = PythonOperator(
        task_id="load_csv_file",
        python_callable=write_csv_file,
        op_kwargs={"rows": transform_clip_temperatures.output},  # dag_run comes from the task context
        # A file on the writing worker's disk: under Celery always the worker serving LOCAL_FILES_QUEUE,
        # so every run's CSV is in one place (weather_data_s3 writes to S3 instead).
        queue=LOCAL_FILES_QUEUE,
    )
    transform_clip_temperatures >> load_csv_file
