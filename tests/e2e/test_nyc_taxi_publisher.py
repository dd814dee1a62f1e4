"""nyc_taxi_ingestion on its shipped source, the TLC's own parquet files (the publisher stand-in: each
era's real schema, out-of-month pickups, both fees, publication and republication on its clock) -
whole DAG runs against real S3 and Postgres. The course mirror's tests: test_nyc_taxi.py."""

from __future__ import annotations

import copy
import io
from datetime import UTC, datetime

import pytest

DAG_ID = "nyc_taxi_ingestion"
ROWS = 2000
CLOCK = "2026-12-01T00:00:00+00:00"  # the stand-in's today: every month up to 2026-09 is published


@pytest.fixture
def publisher(standin):
    standin.configure(tlc_rows_per_month=ROWS, tlc_now=CLOCK)
    return standin


def _run(dagbag, month: str):
    dag = copy.deepcopy(dagbag.get_dag(DAG_ID))
    for task in dag.tasks:
        task.retries = 0
    year, mon = map(int, month.split("-"))
    run = dag.test(logical_date=datetime(year + mon // 12, mon % 12 + 1, 2, 6, tzinfo=UTC))
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _pg():
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id="warehouse_db")


def _events(run) -> dict[str, list[dict]]:
    from tests.e2e.asset_events import events_by_asset

    return events_by_asset(run)


# The warehouse's column for each of the file's (the file's own spelling: Airport_fee from 2023-02).
NATURAL_TYPES = {
    "VendorID": "bigint", "tpep_pickup_datetime": "timestamp without time zone",
    "tpep_dropoff_datetime": "timestamp without time zone", "passenger_count": "bigint",
    "trip_distance": "double precision", "RatecodeID": "bigint", "store_and_fwd_flag": "text",
    "PULocationID": "bigint", "DOLocationID": "bigint", "payment_type": "bigint", "fare_amount": "double precision",
    "extra": "double precision", "mta_tax": "double precision", "tip_amount": "double precision",
    "tolls_amount": "double precision", "improvement_surcharge": "double precision",
    "total_amount": "double precision", "congestion_surcharge": "double precision",
    "airport_fee": "double precision", "cbd_congestion_fee": "double precision",
}


def _file_figures(body: bytes) -> dict[str, tuple]:
    """Per column of the TLC's file as served: (non-null count, sum or min/max, distinct values for
    text), computed with pyarrow from the bytes - independent of the project's conform step."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(body))
    figures = {}
    for name in table.column_names:
        column = table[name]
        target = "airport_fee" if name == "Airport_fee" else name
        if target not in NATURAL_TYPES:
            continue
        kind = NATURAL_TYPES[target]
        count = len(column) - column.null_count
        if kind.startswith("timestamp"):
            figures[target] = (count, pc.min(column).as_py(), pc.max(column).as_py())
        elif kind == "text":
            figures[target] = (count, tuple(sorted(v for v in pc.unique(column).to_pylist() if v is not None)))
        elif count == 0:
            figures[target] = (0, None)
        else:
            figures[target] = (count, round(pc.sum(column.cast("float64")).as_py(), 4))
    return figures


def _table_figures(month: str) -> dict[str, tuple]:
    figures = {}
    for column, kind in NATURAL_TYPES.items():
        quoted = f'"{column}"'
        where = [f"{month}-01"]
        if kind.startswith("timestamp"):
            row = _pg().get_first(f"SELECT count({quoted}), min({quoted}), max({quoted}) FROM yellow_taxi_trips "
                                  "WHERE data_month = %s", where)
            figures[column] = tuple(row)
        elif kind == "text":
            count = _pg().get_first(f"SELECT count({quoted}) FROM yellow_taxi_trips WHERE data_month = %s", where)[0]
            values = _pg().get_records(f"SELECT DISTINCT {quoted} FROM yellow_taxi_trips WHERE data_month = %s "
                                       f"AND {quoted} IS NOT NULL ORDER BY 1", where)
            figures[column] = (count, tuple(v for (v,) in values))
        else:
            count, total = _pg().get_first(f"SELECT count({quoted}), sum({quoted})::float8 FROM yellow_taxi_trips "
                                           "WHERE data_month = %s", where)
            figures[column] = (count, None if total is None else round(total, 4))
    return figures


@pytest.mark.parametrize("month", ["2023-06", "2024-06", "2025-06"])
def test_a_month_of_each_era_lands_with_every_value_and_its_natural_type(dagbag, publisher, stack, month):
    """2023-02.. (int32 ids, large_string, Airport_fee), the same schema in 2024, and 2025 (plus
    cbd_congestion_fee): every column's count and sum (min/max for times, the values of the flag)
    equal the file's as served, the fee columns included; the table's types are the natural ones."""
    run, states = _run(dagbag, month)

    assert run.state == "success", states
    body = stack.get_object("nyc-tlc", f"raw/yellow_tripdata_{month}.parquet")  # the file as downloaded
    expected, landed = _file_figures(body), _table_figures(month)
    assert set(expected) == set(NATURAL_TYPES) - ({"cbd_congestion_fee"} if month < "2025-01" else set())
    for column, figures in expected.items():
        if NATURAL_TYPES[column].startswith("timestamp") or NATURAL_TYPES[column] == "text":
            assert landed[column] == figures, column
        else:
            assert landed[column][0] == figures[0] and landed[column][1] == pytest.approx(figures[1]), column
    if month < "2025-01":
        assert landed["cbd_congestion_fee"] == (0, None)  # no such column in the file: NULL, not 0
    else:
        assert landed["cbd_congestion_fee"][1] > 0
    types = dict(_pg().get_records("SELECT column_name, data_type FROM information_schema.columns "
                                   "WHERE table_name = 'yellow_taxi_trips' AND column_name <> 'data_month'"))
    assert types == NATURAL_TYPES
    source = _events(run)["warehouse.yellow_taxi_trips"][-1]["source"]
    assert source["url"].endswith(f"/trip-data/yellow_tripdata_{month}.parquet") and source["etag"]


def test_a_republished_month_is_found_reloaded_and_says_so(dagbag, publisher, stack):
    """The TLC republishes a month (the stand-in: 30 days after publication, with late trips added):
    the watch's HEAD finds the new ETag, the month's re-run replaces its rows - the new file's, once
    each - and its table event names both versions. Re-running the same file changes nothing."""
    from include.tlc_publication import republished_months

    month = "2025-05"
    run, states = _run(dagbag, month)
    assert run.state == "success", states
    first = _events(run)["warehouse.yellow_taxi_trips"][-1]
    assert first["republished"] is None
    before = _pg().get_first("SELECT count(*) FROM yellow_taxi_trips WHERE data_month = '2025-05-01'")[0]
    assert [m["month"] for m in republished_months()] == []  # nothing changed yet

    publisher.configure(tlc_republished={month: 1})  # 30 days after its publication; the clock is past that
    changed = republished_months()
    assert [m["month"] for m in changed] == [month]
    assert changed[0]["now"]["etag"] != changed[0]["loaded"]["etag"] == first["source"]["etag"]

    run, states = _run(dagbag, month)

    assert run.state == "success", states
    event = _events(run)["warehouse.yellow_taxi_trips"][-1]
    assert event["republished"]["previous"]["etag"] == first["source"]["etag"]
    assert event["republished"]["current"]["etag"] == event["source"]["etag"] == changed[0]["now"]["etag"]
    raw_event = _events(run)["nyc_tlc.raw"][-1]
    assert raw_event["republished"] is True
    after = _pg().get_first("SELECT count(*), count(DISTINCT (tpep_pickup_datetime, tpep_dropoff_datetime, "
                            "\"PULocationID\", \"DOLocationID\", fare_amount, total_amount)) FROM yellow_taxi_trips "
                            "WHERE data_month = '2025-05-01'")
    assert after[0] == event["rows"] > before  # the late trips, and the month's rows once
    assert after[1] == after[0]
    assert republished_months() == []

    run, _ = _run(dagbag, month)  # the same file again: same rows, not a republication
    assert _events(run)["warehouse.yellow_taxi_trips"][-1]["republished"] is None
    assert _pg().get_first("SELECT count(*) FROM yellow_taxi_trips WHERE data_month = '2025-05-01'")[0] == after[0]


def test_a_fee_outside_its_era_fails_the_check_and_keeps_the_published_month(dagbag, publisher, capfd,
                                                                            monkeypatch):
    """The staged month is checked before the swap for parquet too: a 2025-01 load whose rows carry the
    congestion fee before 2025-01-05 (when the toll began) fails `cbd_congestion_fee_matches_its_era`,
    the published month stays as it was and the staged table stays for inspection."""
    from include import nyc_taxi

    month = "2025-01"
    run, states = _run(dagbag, month)
    assert run.state == "success", states
    before = _pg().get_first("SELECT count(*), sum(cbd_congestion_fee) FROM yellow_taxi_trips "
                             "WHERE data_month = '2025-01-01'")
    stage = nyc_taxi.copy_parquet_into_staging

    def stage_with_early_fees(parquet, m, conn):
        copied = stage(parquet, m, conn)
        _pg().run(f"UPDATE {nyc_taxi.staged_table(m)} SET cbd_congestion_fee = 0.75 "
                  "WHERE tpep_pickup_datetime < '2025-01-04'")
        return copied

    monkeypatch.setattr(nyc_taxi, "copy_parquet_into_staging", stage_with_early_fees)

    run, states = _run(dagbag, month)

    assert run.state == "failed"
    assert states["check_table"] == "failed" and states["publish"] == "upstream_failed"
    out = capfd.readouterr().out
    assert "cbd_congestion_fee_matches_its_era" in out and "yellow_taxi_trips_2025_01_staged" in out
    assert _pg().get_first("SELECT count(*), sum(cbd_congestion_fee) FROM yellow_taxi_trips "
                           "WHERE data_month = '2025-01-01'") == before
    assert _pg().get_first("SELECT to_regclass('yellow_taxi_trips_2025_01_staged') IS NOT NULL")[0]
