"""weather_data_classes_api rewritten with the TaskFlow API (lab 12, exercise 1)."""

from airflow.sdk import dag, task

from include.dag_defaults import DEFAULT_ARGS, LOCAL_FILES_QUEUE
from include.open_meteo import fetch_hourly_temperatures
from include.weather import clip_temperatures, weather_params, write_csv_file


@dag(
    dag_id="weather_data_taskflow_api",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    params=weather_params(),
    tags=["weather", "open-meteo", "lab12"],
    doc_md="""
### Weather, TaskFlow API
Same pipeline as `weather_data_classes_api`: Open-Meteo archive hourly temperature for the params'
location and dates -> clipped to [-20, 50] °C -> `$WEATHER_OUTPUT_DIR/weather_data_taskflow_api/<logical date>.csv`.
""",
)
def weather_data_taskflow_api():
    # multiple_outputs=False: a `-> dict` task would otherwise also push every key as its own XCom.
    @task(show_return_value_in_logs=False, multiple_outputs=False)  # ~9k rows: keep them out of the log
    def extract_hourly_temperatures(params=None) -> dict:
        return fetch_hourly_temperatures(
            params["latitude"], params["longitude"], params["start_date"], params["end_date"], params["timezone"]
        )

    @task(show_return_value_in_logs=False, multiple_outputs=False)
    def transform_clip_temperatures(hourly: dict) -> dict:
        return clip_temperatures(hourly)

    # The CSV is a file on the disk of the worker that writes it: under Celery, always the one that
    # serves LOCAL_FILES_QUEUE, so every run's file is in one place (weather_data_s3 writes to S3).
    @task(queue=LOCAL_FILES_QUEUE)
    def load_csv_file(rows: dict, dag_run=None) -> str:
        return write_csv_file(rows, dag_run)

    load_csv_file(transform_clip_temperatures(extract_hourly_temperatures()))


weather_data_taskflow_api()
