"""Daily: reload every month of yellow_taxi_trips whose TLC file was republished since we loaded it."""

from datetime import UTC, datetime

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task
from airflow.timetables.trigger import CronTriggerTimetable

from include.dag_defaults import DEFAULT_ARGS


@dag(
    dag_id="nyc_taxi_republication_watch",
    schedule=CronTriggerTimetable("0 8 * * *", timezone="UTC"),
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["nyc-taxi", "event-based"],
    doc_md="""
### NYC taxi republication watch
The TLC sometimes republishes a month with corrections (a new file: new ETag and Last-Modified).
Once a day, `find_republished_months` sends one HEAD per month `tlc_loaded_files` records (the file
version each month of `yellow_taxi_trips` came from) and compares; `reload_month` triggers
`nyc_taxi_ingestion` with `{"month": ...}` for each changed month. That run replaces the month
(staged, checked, swapped in: the same rows for the same file, never duplicates) and its
`yellow_taxi_trips` event carries `republished` with the versions before and now. No changed month:
nothing is triggered. Months loaded from the other source (mirror vs publisher) are not compared.
""",
)
def nyc_taxi_republication_watch():
    @task
    def find_republished_months() -> list[dict]:
        from include.tlc_publication import republished_months  # noqa: PLC0415

        changed = republished_months()
        for month in changed:
            print(f"{month['month']} republished: {month['loaded']['etag']} -> {month['now']['etag']} "
                  f"(Last-Modified {month['now']['last_modified']})")
        return [{"month": month["month"]} for month in changed]

    TriggerDagRunOperator.partial(
        task_id="reload_month", trigger_dag_id="nyc_taxi_ingestion", wait_for_completion=False,
    ).expand(conf=find_republished_months())


nyc_taxi_republication_watch()
