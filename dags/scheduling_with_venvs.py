"""The TwelveData fetch inside a PythonVirtualenvOperator that installs `twelvedata` itself
(lab 12, exercise 3): the worker image needs no TwelveData client."""

from datetime import UTC, datetime

from airflow.sdk import dag, task

from include.assets import MARKET_DATA_VENVS
from include.dag_defaults import DEFAULT_ARGS
from include.twelvedata import (
    USER_MACROS,
    exchange_rate_venv_operator,
    forex_minutes_timetable,
    market_data_event,
    write_record_to_s3,
)


@dag(
    dag_id="scheduling_with_venvs",
    schedule=forex_minutes_timetable(),  # every minute the forex market is open (New York time)
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=3,
    default_args=DEFAULT_ARGS,
    user_defined_macros=USER_MACROS,
    tags=["exchange-rates", "twelvedata", "virtualenv", "lab12"],
    doc_md="""
### Exchange rate in a virtualenv
Every minute the forex market is open (Sunday 17:00 to Friday 17:00 New York time); a minute
without a rate exits the venv with code 99, which skips the task (nothing stored).
`extract_exchange_rate` runs in a virtualenv built with uv that installs `twelvedata` (cached in
`$AIRFLOW_HOME/venv-cache` between runs), serialised with cloudpickle; only the run's logical
date goes in. The key comes from the `TWELVEDATA_API_KEY` environment variable of the
workers. The record lands in `s3://market-data/scheduling_with_venvs/USD_EUR/<logical date>.json`
(asset `market_data.scheduling_with_venvs`; event extra: key, symbol, rate, rate_at).
""",
)
def scheduling_with_venvs():
    extract_exchange_rate = exchange_rate_venv_operator()

    @task(outlets=[MARKET_DATA_VENVS])
    def load_record_to_s3(record: dict, dag_run=None, outlet_events=None) -> str:
        uri = write_record_to_s3(record, dag_run)
        outlet_events[MARKET_DATA_VENVS].extra = market_data_event(record, dag_run)
        return uri

    load_record_to_s3(extract_exchange_rate.output)


scheduling_with_venvs()
