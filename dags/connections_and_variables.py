"""Like scheduling_with_venvs, but the key comes from an Airflow variable passed into the isolated
task, and the rate goes into Postgres with PostgresHook (lab 12, exercise 5)."""

from datetime import UTC, datetime

from airflow.sdk import dag, task

from include.assets import EXCHANGE_RATES
from include.dag_defaults import DEFAULT_ARGS
from include.quality import exchange_rate_checks
from include.twelvedata import SYMBOL, USER_MACROS, exchange_rate_venv_operator, forex_minutes_timetable
from include.warehouse import publish_exchange_rate, stage_exchange_rate


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
skips the fetch and the load. `load_exchange_rate` stages the rate in `exchange_rates_staged`
(`warehouse_db`), keyed (`symbol`, `rate_at` = the run's logical date). `check_columns` /
`check_table` (common-sql check operators on that staged row) require the rate within USD/EUR's
plausible range [0.5, 1.5], a non-null key and exactly one row for it; only then does `publish`
move it into `exchange_rates` (an upsert: a re-run rewrites its row, never adds one) and emit the
`warehouse.exchange_rates` asset event (extra: symbol, rate, rate_at, rows). A rate that fails a
check never reaches `exchange_rates`: it stays in the stage, named in the error.
""",
)
def connections_and_variables():
    extract_exchange_rate = exchange_rate_venv_operator(
        apikey_template="{{ var.value.get('TWELVEDATA_API_KEY', '') }}"
    )

    @task
    def load_exchange_rate(record: dict, run_id=None) -> dict:
        return stage_exchange_rate(record, run_id=run_id)

    @task(outlets=[EXCHANGE_RATES])
    def publish(record: dict, outlet_events=None) -> dict:
        rows = publish_exchange_rate(record["symbol"], record["rate_at"])
        extra = {"symbol": record["symbol"], "rate": record["rate"], "rate_at": record["rate_at"], "rows": rows}
        outlet_events[EXCHANGE_RATES].extra = extra
        return extra

    check_columns, check_table = exchange_rate_checks(SYMBOL, record_task_id=extract_exchange_rate.task_id)
    load_exchange_rate(extract_exchange_rate.output) >> [check_columns, check_table] >> \
        publish(extract_exchange_rate.output)


connections_and_variables()
