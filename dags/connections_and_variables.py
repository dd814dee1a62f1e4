"""Like scheduling_with_venvs, but the key comes from an Airflow variable passed into the isolated
task, and the rate goes into Postgres with PostgresHook (lab 12, exercise 5)."""

from datetime import UTC, datetime

from airflow.sdk import dag, task

from include.dag_defaults import DEFAULT_ARGS
from include.twelvedata import USER_MACROS, exchange_rate_venv_operator, forex_minutes_timetable
from include.warehouse import upsert_exchange_rate


@dag(
    dag_id="connections_and_variables",
    schedule=forex_minutes_timetable(),  # every minute the forex market is open (New York time)
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=3,
    default_args=DEFAULT_ARGS,
    user_defined_macros=USER_MACROS,
    tags=["exchange-rates", "twelvedata", "virtualenv", "postgres", "lab12"],
    doc_md="""
### Connections and variables
The key is read from the Airflow variable `TWELVEDATA_API_KEY` (masked in logs and rendered
fields) and passed as a parameter into the virtualenv task, which cannot read Airflow's
configuration itself. Scheduled every minute the forex market is open; a minute without a rate
skips the fetch and the load. The rate is upserted into `exchange_rates` in `warehouse_db` on
(`symbol`, `rate_at` = the run's logical date): a re-run rewrites its row, never adds one.
""",
)
def connections_and_variables():
    extract_exchange_rate = exchange_rate_venv_operator(
        apikey_template="{{ var.value.get('TWELVEDATA_API_KEY', '') }}"
    )

    @task
    def load_exchange_rate(record: dict) -> int:
        return upsert_exchange_rate(record)

    load_exchange_rate(extract_exchange_rate.output)


connections_and_variables()
