"""NYC taxi end to end on small synthetic months: catch-up, idempotent re-runs, broken files,
natural column types - real S3 and Postgres, the TLC stand-in."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "nyc_taxi_ingestion"
ROWS = 3000


@pytest.fixture
def tlc(standin):
    standin.configure(tlc_rows_per_month=ROWS)
    return standin


def _run(dagbag, month: str, retries: int = 0):
    """A run for `month`: dag.test's manual run on the 2nd of the next month loads it."""
    dag = copy.deepcopy(dagbag.get_dag(DAG_ID))
    for task in dag.tasks:
        task.retries = retries
    year, mon = map(int, month.split("-"))
    run = dag.test(logical_date=datetime(year + mon // 12, mon % 12 + 1, 2, 6, tzinfo=UTC))
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _pg():
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id="warehouse_db")


def _month_fingerprint(month: str) -> tuple:
    """What readers of yellow_taxi_trips see of a month: rows, timed pickups, fare total."""
    if not _pg().get_first("SELECT to_regclass('yellow_taxi_trips') IS NOT NULL")[0]:
        return (0, 0, None)
    return tuple(_pg().get_first("SELECT count(*), count(tpep_pickup_datetime), round(sum(fare_amount)::numeric, 2) "
                                 "FROM yellow_taxi_trips WHERE data_month = %s", [f"{month}-01"]))


def _month_count(month: str) -> int:
    if not _pg().get_first("SELECT to_regclass('yellow_taxi_trips') IS NOT NULL")[0]:
        return 0
    return _pg().get_first("SELECT count(*) FROM yellow_taxi_trips WHERE data_month = %s", [f"{month}-01"])[0]


def test_two_months_of_catch_up_land_with_their_counts(dagbag, tlc, stack):
    for month in ("2021-01", "2021-02"):
        run, states = _run(dagbag, month)
        assert run.state == "success", (month, states)
        assert _month_count(month) == ROWS
    keys = stack.list_keys("nyc-tlc")
    assert {"raw/yellow_tripdata_2021-01.csv.gz", "parquet/yellow_tripdata_2021-01.parquet",
            "raw/yellow_tripdata_2021-02.csv.gz", "parquet/yellow_tripdata_2021-02.parquet"} <= set(keys)
    pickups = _pg().get_first("SELECT min(tpep_pickup_datetime), max(tpep_pickup_datetime) FROM yellow_taxi_trips "
                              "WHERE data_month = '2021-02-01'")
    assert pickups[0] >= datetime(2021, 2, 1) and pickups[1] < datetime(2021, 3, 1)


def test_rerunning_a_month_replaces_it(dagbag, tlc):
    _run(dagbag, "2021-03")
    run, states = _run(dagbag, "2021-03")

    assert run.state == "success", states
    assert _month_count("2021-03") == ROWS


def test_column_types_are_the_natural_ones(dagbag, tlc):
    _run(dagbag, "2021-01")
    types = dict(_pg().get_records(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'yellow_taxi_trips'"))
    assert types["tpep_pickup_datetime"] == types["tpep_dropoff_datetime"] == "timestamp without time zone"
    for column in ("VendorID", "passenger_count", "RatecodeID", "PULocationID", "DOLocationID", "payment_type"):
        assert types[column] == "bigint", column
    for column in ("trip_distance", "fare_amount", "tip_amount", "total_amount", "congestion_surcharge"):
        assert types[column] == "double precision", column
    assert types["store_and_fwd_flag"] == "text" and types["data_month"] == "date"
    nullable = _pg().get_first("SELECT count(*) FILTER (WHERE \"VendorID\" IS NULL) FROM yellow_taxi_trips")[0]
    assert nullable > 0  # empty integer fields became NULL, not 0


@pytest.mark.parametrize(
    ("fault", "failing", "message"),
    [
        # Not a whole gzip stream: caught before it replaces the raw object (see the tests below).
        ("truncated_gzip", "download", "the gzip stream ends early"),
        ("missing_column", "parquetize", "s3://nyc-tlc/raw/yellow_tripdata_2021-04.csv.gz (2021-04): missing column(s) "
                                         "fare_amount"),
        ("non_numeric_fare", "parquetize", "s3://nyc-tlc/raw/yellow_tripdata_2021-04.csv.gz (2021-04): bad value"),
    ],
)
def test_broken_file_fails_and_leaves_the_month_as_it_was(dagbag, tlc, capfd, fault, failing, message):
    _run(dagbag, "2021-04")
    before = _month_count("2021-04")
    tlc.inject_fault("/DataTalksClub/", fault, times=None)

    run, states = _run(dagbag, "2021-04")

    assert run.state == "failed"
    assert states[failing] == "failed" and states["load"] == "upstream_failed"
    assert message in capfd.readouterr().out
    assert _month_count("2021-04") == before == ROWS


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("empty_body", "an empty body (0 bytes)"),
        ("truncated", "the gzip stream ends early"),  # a complete-looking answer, half the file
        ("dropped", "cut off after"),  # the connection closes before the promised end
    ],
)
def test_a_short_download_never_replaces_a_good_raw_file(dagbag, tlc, stack, capfd, fault, message):
    """A dropped connection can end an HTTP 200 stream early. The download checks length and gzip
    integrity before anything replaces the object, names the month and key, and is retried."""
    run, _ = _run(dagbag, "2021-05")
    assert run.state == "success"
    key = "raw/yellow_tripdata_2021-05.csv.gz"
    good = stack.list_keys("nyc-tlc", key)
    tlc.inject_fault("/DataTalksClub/", fault, times=None)

    run, states = _run(dagbag, "2021-05")

    assert run.state == "failed" and states["download"] == "failed" and states["parquetize"] == "upstream_failed"
    out = capfd.readouterr().out
    assert message in out and "TLC download of 2021-05" in out and f"s3://nyc-tlc/{key} left as it was" in out
    assert stack.list_keys("nyc-tlc", key) == good  # same ETag: untouched
    assert _month_count("2021-05") == ROWS


def test_a_download_cut_once_is_retried_and_succeeds(dagbag, tlc, stack):
    from datetime import timedelta

    tlc.inject_fault("/DataTalksClub/", "dropped", times=1)
    dag = copy.deepcopy(dagbag.get_dag(DAG_ID))
    for task in dag.tasks:
        task.retries, task.retry_delay, task.retry_exponential_backoff = 1, timedelta(seconds=1), False

    run = dag.test(logical_date=datetime(2021, 8, 2, 6, tzinfo=UTC))

    assert run.state == "success"
    assert run.get_task_instance("download").try_number == 2
    assert _month_count("2021-07") == ROWS


def test_unpublished_month_skips_a_scheduled_run(tlc):
    """A scheduled (catch-up) run of a month not out yet has nothing to load: a visible skip.
    (dag.test makes manual runs only: the step itself, as the scheduled run calls it.)"""
    from airflow.sdk.exceptions import AirflowSkipException

    from include.nyc_taxi import download_month

    tlc.configure(tlc_last_published="2021-05")  # as if June were not out yet

    with pytest.raises(AirflowSkipException, match=r"TLC file for 2021-06 is not published yet \(404"):
        download_month("2021-06", manual=False)
    assert _month_count("2021-06") == 0


def test_unpublished_month_fails_a_manual_run_saying_so(dagbag, tlc, capfd):
    """A user who triggers a month gets a red run naming the month, never a green one that did nothing."""
    tlc.configure(tlc_last_published="2021-05")

    run, states = _run(dagbag, "2021-06")

    assert run.state == "failed"
    assert states["download"] == "failed" and states["load"] == "upstream_failed"
    out = capfd.readouterr().out
    assert "TLC has no file for 2021-06 (404" in out and "`month` param" in out
    assert _month_count("2021-06") == 0


def test_trigger_with_the_month_param_loads_that_month_whatever_the_logical_date(tlc):
    """The UI's Trigger carries a logical date of now - after the catch-up's last month. The run
    still has its tasks (no DAG end_date) and loads the month named in the form."""
    from tests.e2e.conftest import fresh_dag

    dag = fresh_dag(DAG_ID)
    for task in dag.tasks:
        task.retries = 0
    run = dag.test(logical_date=datetime.now(UTC), run_conf={"month": "2021-02"})

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success" and set(states) == {"download", "parquetize", "load", "check_columns",
                                                      "check_table", "publish"}, states
    assert _month_count("2021-02") == ROWS


def test_two_first_loads_at_once_both_succeed(dagbag, tlc):
    """Catch-up runs two months at once; on an empty warehouse both create the table. Two
    concurrent CREATE TABLE IF NOT EXISTS fail one of them on pg_type's unique index unless the
    DDL is serialized - both loads must succeed on their first try."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from include.nyc_taxi import load_month

    for month in ("2021-01", "2021-02"):
        run, states = _run(dagbag, month)
        assert run.state == "success", states
    for attempt in range(3):
        _pg().run("DROP TABLE IF EXISTS yellow_taxi_trips CASCADE")
        barrier = threading.Barrier(2)

        def load(month, barrier=barrier):
            barrier.wait()
            return load_month(month)

        with ThreadPoolExecutor(2) as pool:
            loaded = list(pool.map(load, ["2021-01", "2021-02"]))
        assert loaded == [ROWS, ROWS], attempt
        assert (_month_count("2021-01"), _month_count("2021-02")) == (ROWS, ROWS)
    # Every other month is gone with the dropped table: void its earlier asset events, or the DAG
    # scheduled on yellow_taxi_trips (with catch-up) would later be sent to build months that are gone.
    from include.assets import YELLOW_TAXI_TRIPS
    from tests.e2e.asset_events import void_events

    void_events(YELLOW_TAXI_TRIPS, keep=lambda extra: extra.get("month") in ("2021-01", "2021-02"))


def test_loaded_values_match_the_parquet_file(dagbag, tlc, stack):
    """Binary COPY must store exactly what the parquet file holds: compare per-column aggregates."""
    import io

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    run, states = _run(dagbag, "2021-05")
    assert run.state == "success", states
    table = pq.read_table(io.BytesIO(stack.get_object("nyc-tlc", "parquet/yellow_tripdata_2021-05.parquet")))

    stored = _pg().get_first(
        'SELECT count("VendorID"), sum("VendorID"), sum(fare_amount), sum(total_amount), min(tpep_pickup_datetime), '
        "max(tpep_dropoff_datetime), count(*) FILTER (WHERE store_and_fwd_flag = 'Y') FROM yellow_taxi_trips "
        "WHERE data_month = '2021-05-01'")
    expected = (
        pc.count(table["VendorID"]).as_py(), pc.sum(table["VendorID"]).as_py(),
        pc.sum(table["fare_amount"]).as_py(), pc.sum(table["total_amount"]).as_py(),
        pc.min(table["tpep_pickup_datetime"]).as_py(), pc.max(table["tpep_dropoff_datetime"]).as_py(),
        pc.sum(pc.equal(table["store_and_fwd_flag"], "Y")).as_py(),
    )
    assert stored[:2] == expected[:2] and stored[4:] == expected[4:]
    assert stored[2] == pytest.approx(expected[2]) and stored[3] == pytest.approx(expected[3])


def test_load_refuses_a_parquet_file_without_the_tlc_schema(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.nyc_taxi import TaxiDataError, copy_parquet_into_month

    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"VendorID": ["1"], "fare_amount": ["12.5"]}), wrong)

    with pytest.raises(TaxiDataError, match="does not have the TLC schema"):
        copy_parquet_into_month(wrong, "2021-01", conn=None)  # refused before touching the warehouse


def test_readers_see_the_previous_data_while_a_month_loads(dagbag, tlc, monkeypatch):
    """A month's load used to TRUNCATE its partition first: every reader of the whole table waited
    for the whole load. Now readers of other months, of the whole table and of the month itself
    see the previous data until the new month commits."""
    import threading
    import time

    from include import pg_binary
    from include.nyc_taxi import load_month

    for month in ("2021-02", "2021-03"):
        assert _run(dagbag, month)[0].state == "success"
    encode, gate = pg_binary.encode_batch, threading.Event()

    def slow_encode(batch):
        gate.set()
        time.sleep(1.5)  # a load that takes a while
        return encode(batch)

    monkeypatch.setattr(pg_binary, "encode_batch", slow_encode)
    loader = threading.Thread(target=load_month, args=("2021-03",))
    loader.start()
    try:
        assert gate.wait(30), "the load did not start"
        reader = _pg().get_conn()
        reader.execute("SET statement_timeout = '3s'")
        counts = dict(reader.execute("SELECT data_month::text, count(*) FROM yellow_taxi_trips "
                                     "WHERE data_month IN ('2021-02-01', '2021-03-01') GROUP BY 1").fetchall())
        reader.close()
        assert loader.is_alive(), "the load finished before the read: nothing was proven"
        assert counts == {"2021-02-01": ROWS, "2021-03-01": ROWS}
    finally:
        loader.join(120)
    assert _month_count("2021-03") == ROWS
    assert not _pg().get_first("SELECT to_regclass('yellow_taxi_trips_2021_03_staged') IS NOT NULL")[0]


# -- asset events and the data-quality gate ----------------------------------------------------------

def _events(run) -> dict[str, list[dict]]:
    from tests.e2e.asset_events import events_by_asset

    return events_by_asset(run)


def test_a_month_emits_its_raw_parquet_and_table_events_with_their_extra(dagbag, tlc):
    run, states = _run(dagbag, "2021-06")

    assert run.state == "success", states
    assert states["check_columns"] == states["check_table"] == states["publish"] == "success"
    interval = {"data_interval_start": run.data_interval_start.isoformat(),
                "data_interval_end": run.data_interval_end.isoformat()}
    assert _events(run) == {
        "nyc_tlc.raw": [{"month": "2021-06", "key": "raw/yellow_tripdata_2021-06.csv.gz"}],
        "nyc_tlc.parquet": [{"month": "2021-06", "key": "parquet/yellow_tripdata_2021-06.parquet", "rows": ROWS}],
        "warehouse.yellow_taxi_trips": [{
            "month": "2021-06", "rows": ROWS, "parquet_key": "parquet/yellow_tripdata_2021-06.parquet",
            "out_of_bounds": {"fare": 0, "distance": 0, "duration": 0, "pickup_outside_month": 0}, **interval}],
    }


def test_bad_but_real_rows_are_kept_and_counted_in_the_event(dagbag, tlc):
    """1% of the month's trips with reversed (negative) fares - the voided and disputed trips real
    months carry: under the 5% bound, so the month loads whole and its event counts them."""
    tlc.inject_fault("/DataTalksClub/", "out_of_bounds_every_100", times=None)

    run, states = _run(dagbag, "2021-06")

    assert run.state == "success", states
    assert _month_count("2021-06") == ROWS  # kept
    (event,) = _events(run)["warehouse.yellow_taxi_trips"]
    assert event["out_of_bounds"] == {"fare": ROWS // 100, "distance": 0, "duration": 0, "pickup_outside_month": 0}


@pytest.mark.parametrize(
    ("fault", "failing", "figures"),
    [
        # One trip in 1,000 without a pickup time: the column check counts them.
        ("null_pickup_time", "check_columns", ["Column: tpep_pickup_datetime", "Check: null_check",
                                               "'result': 3"]),
        # One trip in 10 with a negative fare: a broken file, not bad-but-real rows.
        ("out_of_bounds_every_10", "check_table", ["fare_out_of_bounds_share: out_of_bounds=300, rows=3000",
                                                   "fare_amount < 0"]),
    ],
)
def test_a_month_failing_a_check_fails_the_run_and_emits_no_table_event(dagbag, tlc, capfd, fault, failing, figures):
    before = _month_fingerprint("2021-07")
    tlc.inject_fault("/DataTalksClub/", fault, times=None)

    run, states = _run(dagbag, "2021-07")

    assert run.state == "failed"
    assert states[failing] == "failed" and states["publish"] == "upstream_failed", states
    out = capfd.readouterr().out
    for figure in figures:
        assert figure in out, figure
    events = _events(run)
    assert "warehouse.yellow_taxi_trips" not in events  # nothing scheduled on the table runs on this month
    assert set(events) == {"nyc_tlc.raw", "nyc_tlc.parquet"}  # the files themselves did land
    _never_reached_the_table_then_fixed(tlc, dagbag, "2021-07", before)


def _never_reached_the_table_then_fixed(tlc, dagbag, month: str, before: tuple) -> None:
    """The failed month stayed in its staged table (for a look at it); readers of yellow_taxi_trips
    still see what the month held before. A run with a good file replaces both and emits the event."""
    staged = f"yellow_taxi_trips_{month.replace('-', '_')}_staged"
    assert _month_fingerprint(month) == before, "a month that failed its checks reached the table"
    assert _pg().get_first(f"SELECT count(*) FROM {staged}")[0] > 0  # noqa: S608 - test's own name
    tlc.clear_faults()
    tlc.configure(tlc_rows_per_month=ROWS)
    run, states = _run(dagbag, month)
    assert run.state == "success", states
    assert [event["rows"] for event in _events(run)["warehouse.yellow_taxi_trips"]] == [ROWS]
    assert _month_count(month) == ROWS
    assert not _pg().get_first("SELECT to_regclass(%s) IS NOT NULL", [staged])[0]


def test_a_load_that_loses_rows_fails_the_row_count_check(dagbag, tlc, capfd, monkeypatch):
    """The partition must hold as many rows as the parquet file's footer says (passed on by the
    load task): a load that drops one row on its way into Postgres is caught."""
    from include import pg_binary

    encode, dropped = pg_binary.encode_batch, []

    def lossy_encode(batch):
        if not dropped:
            dropped.append(batch.num_rows)
            batch = batch.slice(1)
        return encode(batch)

    monkeypatch.setattr(pg_binary, "encode_batch", lossy_encode)
    before = _month_fingerprint("2021-05")

    run, states = _run(dagbag, "2021-05")

    assert run.state == "failed"
    assert states["load"] == "success" and states["check_table"] == "failed" and states["publish"] == "upstream_failed"
    assert f"rows_match_parquet: rows={ROWS - 1}; must hold: COUNT(*) = {ROWS}" in capfd.readouterr().out
    assert "warehouse.yellow_taxi_trips" not in _events(run)
    monkeypatch.undo()
    _never_reached_the_table_then_fixed(tlc, dagbag, "2021-05", before)
