"""End to end: the lab's scheduling, backfill, virtualenv and connections/variables DAGs, run whole
(dag.test) against the real S3 and warehouse Postgres and the TwelveData / Open-Meteo stand-ins."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from devstack.standins.twelvedata import rate_at
from include.twelvedata import TwelveDataRetryPolicy, venv_cache_dir
from tests.conftest import TEST_TWELVEDATA_KEY

ROOT = Path(__file__).resolve().parents[2]


def _dag(dagbag, dag_id, *, retries=None, fast_retries=False):
    dag = copy.deepcopy(dagbag.get_dag(dag_id))
    for task in dag.tasks:
        if retries is not None:
            task.retries = retries
        if fast_retries and task.retry_policy is not None:
            task.retry_policy = TwelveDataRetryPolicy(first_delay=timedelta(seconds=1))
    return dag


def _run(dag, logical_date):
    run = dag.test(logical_date=logical_date)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _warehouse():
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id="warehouse_db")


def _metadata_texts(dag_id: str) -> str:
    """Everything the metadata DB keeps of a DAG's runs that a user can see: XComs and rendered
    template fields."""
    from airflow.settings import Session
    from sqlalchemy import text

    with Session() as session:
        xcoms = session.execute(text("SELECT CAST(value AS TEXT) FROM xcom WHERE dag_id = :d"), {"d": dag_id})
        rendered = session.execute(
            text("SELECT CAST(rendered_fields AS TEXT) FROM rendered_task_instance_fields WHERE dag_id = :d"),
            {"d": dag_id},
        )
        return "\n".join(str(row[0]) for row in [*xcoms, *rendered])


# -- scheduling_dataset_gathering -------------------------------------------------------------


def test_each_run_stores_the_rate_at_its_logical_date(dagbag, standin, stack, capfd):
    when = datetime(2025, 3, 10, 12, 34, tzinfo=UTC)
    standin.forget_requests()

    run, states = _run(_dag(dagbag, "scheduling_dataset_gathering"), when)

    assert run.state == "success", states
    key = "scheduling_dataset_gathering/USD_EUR/20250310T123400.json"
    record = json.loads(stack.get_object("market-data", key))
    assert record == {"symbol": "USD/EUR", "rate": rate_at("USD/EUR", when), "timestamp": int(when.timestamp()),
                      "rate_at": "2025-03-10T12:34:00+00:00"}
    (request,) = [r for r in standin.requests_seen() if r["path"] == "/exchange_rate"]
    assert request["query"]["date"] == "2025-03-10T12:34:00"  # a documented format
    assert request["query"]["apikey"] == TEST_TWELVEDATA_KEY
    # The key from the variable appears in no task log line, XCom or rendered field.
    assert TEST_TWELVEDATA_KEY not in capfd.readouterr().out
    searched = _metadata_texts("scheduling_dataset_gathering")
    assert "USD/EUR" in searched and TEST_TWELVEDATA_KEY not in searched


def test_consecutive_minutes_are_separate_objects_and_reruns_change_nothing(dagbag, standin, stack):
    dag = _dag(dagbag, "scheduling_dataset_gathering")
    first, second = datetime(2025, 3, 11, 9, 0, tzinfo=UTC), datetime(2025, 3, 11, 9, 1, tzinfo=UTC)
    _run(dag, first)
    _run(dag, second)
    before = stack.list_keys("market-data", "scheduling_dataset_gathering/USD_EUR/20250311")

    run, _ = _run(dag, first)

    assert run.state == "success"
    assert set(before) == {"scheduling_dataset_gathering/USD_EUR/20250311T090000.json",
                           "scheduling_dataset_gathering/USD_EUR/20250311T090100.json"}
    assert stack.list_keys("market-data", "scheduling_dataset_gathering/USD_EUR/20250311") == before


@pytest.mark.parametrize("fault", ["http_401", "body_401", "http_404", "body_400", "empty", "not_json"])
def test_api_errors_fail_at_once_and_store_nothing(dagbag, standin, stack, fault):
    standin.inject_fault("/exchange_rate", fault, times=None)
    before = stack.list_keys("market-data")

    run, states = _run(_dag(dagbag, "scheduling_dataset_gathering", fast_retries=True),
                       datetime(2025, 3, 12, tzinfo=UTC))

    assert run.state == "failed"
    assert states == {"extract_exchange_rate": "failed", "load_record_to_s3": "upstream_failed"}
    assert run.get_task_instance("extract_exchange_rate").try_number == 1  # retries=4, yet no retry
    assert stack.list_keys("market-data") == before


@pytest.mark.parametrize("fault", ["http_429", "body_429", "truncated"])
def test_running_out_of_credits_or_a_cut_answer_is_retried_until_it_works(dagbag, standin, stack, fault):
    standin.inject_fault("/exchange_rate", fault, times=2)

    run, states = _run(_dag(dagbag, "scheduling_dataset_gathering", fast_retries=True),
                       datetime(2025, 3, 13, tzinfo=UTC))

    assert run.state == "success", states
    assert run.get_task_instance("extract_exchange_rate").try_number == 3
    assert "scheduling_dataset_gathering/USD_EUR/20250313T000000.json" in stack.list_keys("market-data")


def test_placeholder_key_fails_with_how_to_set_it(dagbag, standin, stack, monkeypatch, capfd):
    monkeypatch.setenv("AIRFLOW_VAR_TWELVEDATA_API_KEY", "REPLACE_ME_twelvedata_api_key")
    standin.forget_requests()

    run, _ = _run(_dag(dagbag, "scheduling_dataset_gathering"), datetime(2025, 3, 14, tzinfo=UTC))

    assert run.state == "failed"
    assert "Set the Airflow variable TWELVEDATA_API_KEY" in capfd.readouterr().out
    assert [r for r in standin.requests_seen() if r["path"] == "/exchange_rate"] == []


def test_fetch_task_uses_the_capped_pool(dagbag):
    from airflow.models import Pool

    assert dagbag.get_dag("scheduling_dataset_gathering").get_task("extract_exchange_rate").pool == "twelvedata_api"
    assert Pool.get_pool("twelvedata_api").slots == 1


# -- closed markets ---------------------------------------------------------------------------

SATURDAY = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("http_status", ["200", "match"])
def test_a_closed_market_minute_is_a_visible_skip_that_stores_nothing(dagbag, standin, stack, capfd, http_status):
    """TwelveData answers "No data is available on the specified dates" (code 400, with HTTP 200 or
    400) for a minute the forex market is closed: the run is skipped - not failed, not retried, no
    record claiming that time."""
    standin.configure(twelvedata_no_data_http_status=http_status)
    before = stack.list_keys("market-data")

    run, states = _run(_dag(dagbag, "scheduling_dataset_gathering", fast_retries=True), SATURDAY)

    assert run.state == "success"
    assert states == {"extract_exchange_rate": "skipped", "load_record_to_s3": "skipped"}
    assert run.get_task_instance("extract_exchange_rate").try_number == 1
    out = capfd.readouterr().out
    assert "TwelveData has no rate for USD/EUR at 2025-03-15T12:00:00 UTC: No data is available" in out
    assert stack.list_keys("market-data") == before


@pytest.mark.parametrize("dag_id", ["scheduling_with_venvs", "connections_and_variables"])
def test_the_virtualenv_tasks_skip_a_closed_market_minute_too(dagbag, standin, stack, capfd, caplog, dag_id):
    before = stack.list_keys("market-data")

    run, states = _run(_dag(dagbag, dag_id, fast_retries=True), SATURDAY)

    assert run.state == "success"
    assert set(states.values()) == {"skipped"}, states
    assert run.get_task_instance("extract_exchange_rate").try_number == 1
    # The venv's stderr line, relayed into the task log: the reason is visible.
    assert "TwelveData has no rate for USD/EUR at 2025-03-15T12:00:00 UTC" in capfd.readouterr().out + caplog.text
    assert stack.list_keys("market-data") == before
    if _warehouse().get_first("SELECT to_regclass('exchange_rates') IS NOT NULL")[0]:
        assert _warehouse().get_records("SELECT 1 FROM exchange_rates WHERE rate_at = %s", [SATURDAY]) == []


def _scheduled_minutes(dagbag, dag_id, start, end) -> list[datetime]:
    from airflow.serialization.serialized_objects import DagSerialization

    dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dagbag.get_dag(dag_id)))
    return [info.logical_date for info in dag.iter_dagrun_infos_between(start, end)]


@pytest.mark.parametrize("dag_id", ["scheduling_dataset_gathering", "scheduling_with_venvs",
                                    "connections_and_variables"])
def test_no_run_is_scheduled_while_the_market_is_closed(dagbag, dag_id):
    """Friday 17:00 to Sunday 17:00 New York time, DST-aware: the weekend of 2025-03-08 closes at
    22:00 UTC (EST) and reopens at 21:00 UTC (EDT began on Sunday 2 am); a winter weekend reopens
    at 22:00 UTC. Every open minute in between has its run."""
    week = _scheduled_minutes(dagbag, dag_id, datetime(2025, 3, 7, 21, 58, tzinfo=UTC),
                              datetime(2025, 3, 9, 21, 1, tzinfo=UTC))
    assert week == [datetime(2025, 3, 7, 21, 58, tzinfo=UTC), datetime(2025, 3, 7, 21, 59, tzinfo=UTC),
                    datetime(2025, 3, 9, 21, 0, tzinfo=UTC), datetime(2025, 3, 9, 21, 1, tzinfo=UTC)]
    winter = _scheduled_minutes(dagbag, dag_id, datetime(2025, 1, 10, 21, 0, tzinfo=UTC),
                                datetime(2025, 1, 12, 23, 0, tzinfo=UTC))
    assert winter[59] == datetime(2025, 1, 10, 21, 59, tzinfo=UTC) and winter[60] == datetime(2025, 1, 12, 22, 0,
                                                                                               tzinfo=UTC)
    assert len(winter) == 60 + 61
    weekday = _scheduled_minutes(dagbag, dag_id, datetime(2025, 3, 11, tzinfo=UTC), datetime(2025, 3, 12, tzinfo=UTC))
    assert len(weekday) == 24 * 60 + 1  # every minute of a Tuesday, both ends included


# -- backfilling_dataset_gathering ------------------------------------------------------------


def _january_runs(dagbag) -> list[datetime]:
    from airflow.serialization.serialized_objects import DagSerialization

    sdk_dag = dagbag.get_dag("backfilling_dataset_gathering")
    dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(sdk_dag))
    infos = dag.iter_dagrun_infos_between(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 31, tzinfo=UTC))
    return [info.logical_date for info in infos]


def test_catchup_schedules_weekly_intervals_over_january(dagbag):
    assert _january_runs(dagbag) == [datetime(2025, 1, d, tzinfo=UTC) for d in (1, 8, 15, 22, 29)]


# -- virtualenv DAGs --------------------------------------------------------------------------


def test_venv_task_runs_in_its_own_interpreter_with_twelvedata(dagbag, standin, stack, capfd):
    dag = _dag(dagbag, "scheduling_with_venvs")

    started = time.monotonic()
    run, states = _run(dag, datetime(2025, 3, 20, 10, 0, tzinfo=UTC))
    first_seconds = time.monotonic() - started
    started = time.monotonic()
    cached_run, _ = _run(dag, datetime(2025, 3, 20, 10, 1, tzinfo=UTC))
    cached_seconds = time.monotonic() - started
    print(f"\nscheduling_with_venvs: first run {first_seconds:.1f}s (builds the venv), cached {cached_seconds:.1f}s")

    assert run.state == "success", states
    assert cached_run.state == "success"
    record = json.loads(stack.get_object("market-data", "scheduling_with_venvs/USD_EUR/20250320T100000.json"))
    assert record["rate"] == rate_at("USD/EUR", datetime(2025, 3, 20, 10, 0, tzinfo=UTC))
    venvs = sorted(Path(venv_cache_dir()).glob("venv-*/bin/python"))
    assert len(venvs) == 1, venvs  # built once, reused by the second run
    out = capfd.readouterr().out
    assert f"{venvs[0]} " in out or f"{venvs[0].parent.parent}" in out  # the task executed that interpreter
    code = "import importlib.util as u, sys; print(sys.prefix, u.find_spec('twelvedata') is not None, " \
           "u.find_spec('airflow') is None)"
    probe = subprocess.run([str(venvs[0]), "-c", code], capture_output=True, text=True, check=True)
    prefix, has_twelvedata, no_airflow = probe.stdout.split()
    assert prefix != str(Path(__import__("sys").prefix)) and has_twelvedata == "True" and no_airflow == "True"


def test_venv_task_fails_at_once_on_a_bad_key(dagbag, standin, stack):
    standin.inject_fault("/exchange_rate", "http_401", times=None)

    run, states = _run(_dag(dagbag, "scheduling_with_venvs", fast_retries=True), datetime(2025, 3, 21, tzinfo=UTC))

    assert run.state == "failed"
    assert run.get_task_instance("extract_exchange_rate").try_number == 1


def test_venv_task_retries_when_out_of_credits(dagbag, standin, stack):
    standin.inject_fault("/exchange_rate", "http_429", times=1)

    run, states = _run(_dag(dagbag, "scheduling_with_venvs", fast_retries=True), datetime(2025, 3, 19, tzinfo=UTC))

    assert run.state == "success", states
    assert run.get_task_instance("extract_exchange_rate").try_number == 2


def test_rate_is_upserted_into_exchange_rates_and_the_key_never_shows(dagbag, standin, stack, capfd):
    dag = _dag(dagbag, "connections_and_variables")
    when = datetime(2025, 3, 18, 7, 15, tzinfo=UTC)
    standin.forget_requests()

    run, states = _run(dag, when)
    rerun, _ = _run(dag, when)

    assert run.state == rerun.state == "success", states
    rows = _warehouse().get_records("SELECT symbol, rate, rate_at FROM exchange_rates WHERE rate_at = %s", [when])
    assert rows == [("USD/EUR", rate_at("USD/EUR", when), when)]  # one row after two runs
    # The variable's value reached the API ...
    assert {r["query"]["apikey"] for r in standin.requests_seen() if r["path"] == "/exchange_rate"} == \
        {TEST_TWELVEDATA_KEY}
    # ... and nowhere a user can read it: task logs, XComs, rendered template fields.
    assert TEST_TWELVEDATA_KEY not in capfd.readouterr().out
    searched = _metadata_texts("connections_and_variables")
    assert "apikey" in searched and "USD/EUR" in searched  # the rendered op_kwargs and the XCom are there
    assert TEST_TWELVEDATA_KEY not in searched


def test_exchange_rates_columns_have_the_contract_types(dagbag, standin):
    run, _ = _run(_dag(dagbag, "connections_and_variables"), datetime(2025, 3, 24, tzinfo=UTC))
    assert run.state == "success"
    types = dict(_warehouse().get_records(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'exchange_rates'"))
    assert types["symbol"] == "text"
    assert types["rate"] == "double precision"
    assert types["rate_at"] == "timestamp with time zone"
    keys = _warehouse().get_records(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = 'exchange_rates'::regclass AND i.indisprimary ORDER BY a.attname")
    assert [k for (k,) in keys] == ["rate_at", "symbol"]


def test_failed_fetch_writes_no_row(dagbag, standin):
    standin.inject_fault("/exchange_rate", "body_404", times=None)
    when = datetime(2025, 3, 25, tzinfo=UTC)

    run, _ = _run(_dag(dagbag, "connections_and_variables"), when)

    assert run.state == "failed"
    assert _warehouse().get_records("SELECT 1 FROM exchange_rates WHERE rate_at = %s", [when]) == []


def test_january_backfill_dates_helper_is_half_open():
    from include.daily_weather import interval_days

    assert interval_days(datetime(2025, 1, 29, tzinfo=UTC), datetime(2025, 2, 5, tzinfo=UTC)) == \
        (date(2025, 1, 29).isoformat(), date(2025, 2, 4).isoformat())


# -- asset events and the data-quality gate ----------------------------------------------------------


def _events(run) -> dict[str, list[dict]]:
    from tests.e2e.asset_events import events_by_asset

    return events_by_asset(run)


@pytest.mark.parametrize("dag_id", ["scheduling_dataset_gathering", "scheduling_with_venvs"])
def test_each_stored_record_emits_its_market_data_event(dagbag, standin, dag_id):
    when = datetime(2025, 3, 26, 14, 5, tzinfo=UTC)

    run, states = _run(_dag(dagbag, dag_id), when)

    assert run.state == "success", states
    assert _events(run) == {f"market_data.{dag_id}": [{
        "key": f"{dag_id}/USD_EUR/20250326T140500.json", "symbol": "USD/EUR", "rate": rate_at("USD/EUR", when),
        "rate_at": "2025-03-26T14:05:00+00:00"}]}


@pytest.mark.parametrize("dag_id", ["scheduling_dataset_gathering", "connections_and_variables"])
def test_a_closed_market_minute_emits_no_event(dagbag, standin, dag_id):
    run, states = _run(_dag(dagbag, dag_id, fast_retries=True), SATURDAY + timedelta(minutes=7))

    assert run.state == "success" and set(states.values()) == {"skipped"}, states
    assert _events(run) == {}


def test_the_exchange_rates_event_follows_the_passed_checks(dagbag, standin):
    when = datetime(2025, 3, 26, 15, 0, tzinfo=UTC)

    run, states = _run(_dag(dagbag, "connections_and_variables"), when)

    assert run.state == "success", states
    assert states["check_columns"] == states["check_table"] == states["publish"] == "success"
    assert _events(run) == {"warehouse.exchange_rates": [{
        "symbol": "USD/EUR", "rate": rate_at("USD/EUR", when), "rate_at": "2025-03-26T15:00:00+00:00", "rows": 1}]}


def test_an_implausible_rate_fails_the_check_and_never_reaches_the_table(dagbag, standin, capfd):
    """TwelveData has served prices 1,000 times too small (twelvedata-python#69): positive and
    well-formed, so the fetch and the table's CHECK (rate > 0) take it; the range check on the
    staged row does not, the run fails naming the check, the figure and where the row is kept, no
    exchange_rates event goes out and exchange_rates never holds the broken rate."""
    standin.inject_fault("/exchange_rate", "rate_divided_1000", times=None)
    when = datetime(2025, 3, 27, 9, 0, tzinfo=UTC)

    run, states = _run(_dag(dagbag, "connections_and_variables"), when)

    assert run.state == "failed"
    assert states == {"extract_exchange_rate": "success", "load_exchange_rate": "success", "check_columns": "failed",
                      "check_table": "success", "publish": "upstream_failed"}
    assert run.get_task_instance("check_columns").try_number == 1  # bad data is not retried
    bad = round(rate_at("USD/EUR", when) / 1000, 8)
    out = capfd.readouterr().out
    assert "Column: rate" in out and "Check: min" in out and f"'geq_to': 0.5, 'result': {bad}" in out
    assert "Data-quality checks failed on exchange_rates_staged where symbol = 'USD/EUR' AND rate_at = " \
           "'2025-03-27T09:00:00+00:00'. Those rows stay in exchange_rates_staged for inspection; exchange_rates " \
           "was not changed" in out
    assert _events(run) == {}
    # Readers of exchange_rates never see the broken quote: it waits in the stage, inspectable.
    assert _warehouse().get_records("SELECT rate FROM exchange_rates WHERE rate_at = %s", [when]) == []
    assert _warehouse().get_records("SELECT rate, run_id FROM exchange_rates_staged WHERE rate_at = %s",
                                    [when]) == [(bad, run.run_id)]
    # A re-run once the quote is right stages it anew, publishes it, clears the stage and tells the consumers.
    standin.clear_faults()
    rerun, states = _run(_dag(dagbag, "connections_and_variables"), when)
    assert rerun.state == "success", states
    assert [e["rate"] for e in _events(rerun)["warehouse.exchange_rates"]] == [rate_at("USD/EUR", when)]
    good = rate_at("USD/EUR", when)
    assert _warehouse().get_records("SELECT rate FROM exchange_rates WHERE rate_at = %s", [when]) == [(good,)]
    assert _warehouse().get_records("SELECT rate FROM exchange_rates_staged WHERE rate_at = %s", [when]) == []
