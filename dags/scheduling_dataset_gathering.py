"""USD/EUR from TwelveData every minute, one JSON record per run in S3 (lab 12, scheduling)."""

from datetime import UTC, datetime

from airflow.sdk import Variable, dag, task
from airflow.sdk.log import mask_secret

from include.assets import MARKET_DATA_RATES
from include.dag_defaults import DEFAULT_ARGS
from include.http_api import base_url
from include.runs import run_moment
from include.twelvedata import (
    API_KEY_VARIABLE,
    CONN_ID,
    POOL,
    SYMBOL,
    TwelveDataRetryPolicy,
    fetch_exchange_rate,
    forex_minutes_timetable,
    market_data_event,
    write_record_to_s3,
)


@dag(
    dag_id="scheduling_dataset_gathering",
    schedule=forex_minutes_timetable(),  # every minute the forex market is open (New York time)
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=3,
    default_args=DEFAULT_ARGS,
    tags=["exchange-rates", "twelvedata", "s3", "lab12"],
    doc_md="""
### Exchange rate every minute
Runs every minute the forex market is open - Sunday 17:00 to Friday 17:00 New York time, DST
included; a weekend creates no runs. Each run asks TwelveData (`twelvedata` connection, key from
the `TWELVEDATA_API_KEY` variable) for the USD/EUR rate at the run's logical date and stores it as
one JSON object: `s3://market-data/scheduling_dataset_gathering/USD_EUR/<logical date>.json`, and
emits an event of the asset `market_data.scheduling_dataset_gathering` (extra: key, symbol, rate, rate_at).
A minute TwelveData has no rate for ("No data is available", or only a quote older than 15
minutes: a manual run on a weekend, a holiday) skips the run's tasks, with the reason in the log,
and stores nothing. The `twelvedata_api` pool caps concurrent calls (free plan: 8 credits a
minute); running out of credits is retried with exponential backoff, any other API error fails at
once with the API's message.
""",
)
def scheduling_dataset_gathering():
    @task(pool=POOL, retries=4, retry_policy=TwelveDataRetryPolicy())
    def extract_exchange_rate(dag_run=None):
        apikey = Variable.get(API_KEY_VARIABLE, default="")
        mask_secret(apikey)
        return fetch_exchange_rate(SYMBOL, run_moment(dag_run).isoformat(), base_url(CONN_ID), apikey)

    @task(outlets=[MARKET_DATA_RATES])
    def load_record_to_s3(record: dict, dag_run=None, outlet_events=None) -> str:
        uri = write_record_to_s3(record, dag_run)
        outlet_events[MARKET_DATA_RATES].extra = market_data_event(record, dag_run)
        return uri

    load_record_to_s3(extract_exchange_rate())


scheduling_dataset_gathering()
