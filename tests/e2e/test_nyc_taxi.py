"""NYC taxi end to end on small synthetic months of the course's CSV.gz mirror (the `nyc_tlc` path
template switched back to it): catch-up, idempotent re-runs, broken files, natural column types -
real S3 and Postgres, the TLC stand-in. The TLC's parquet files, the default: test_nyc_taxi_publisher.py."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "nyc_taxi_ingestion"
ROWS = 3000


@pytest.fixture
def tlc(standin, monkeypatch):
    from tests.e2e.conftest import use_course_mirror

    use_course_mirror(monkeypatch)
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
    assert run.state == "success" and set(states) == {"wait_for_publication", "download", "parquetize", "load",
                                                      "check_columns", "check_table", "publish"}, states
    assert _month_count("2021-02") == ROWS


@pytest.mark.parametrize("source", ["course mirror", "publisher"])
def test_two_first_loads_at_once_both_succeed(dagbag, tlc, source):
    """Catch-up runs two months at once; on an empty warehouse both create the table (and, from the
    publisher's files, add the fee columns). Two concurrent CREATE TABLE IF NOT EXISTS fail one of them
    on pg_type's unique index unless the DDL is serialized - both loads must succeed on their first try."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from include.nyc_taxi import load_month

    if source == "course mirror":
        months = ("2021-01", "2021-02")
        for month in months:
            run, states = _run(dagbag, month)
            assert run.state == "success", states
        expected = [ROWS, ROWS]
    else:  # two schema eras of the TLC's own files (int64/double counts before 2023-02, the CBD fee from 2025)
        months = ("2022-11", "2025-02")
        tlc.configure(tlc_now="2026-12-01T00:00:00+00:00")
        expected = [_publisher_steps(tlc, month) for month in months]
    for attempt in range(3):
        _pg().run("DROP TABLE IF EXISTS yellow_taxi_trips CASCADE")
        barrier = threading.Barrier(2)

        def load(month, barrier=barrier):
            barrier.wait()
            return load_month(month)

        with ThreadPoolExecutor(2) as pool:
            loaded = list(pool.map(load, months))
        assert loaded == expected, attempt
        assert [_month_count(month) for month in months] == expected
    if source == "publisher":
        cbd = "SELECT count(cbd_congestion_fee) FROM yellow_taxi_trips WHERE data_month = %s"
        assert [_pg().get_first(cbd, [f"{month}-01"])[0] > 0 for month in months] == [False, True]
    # Every other month is gone with the dropped table: void its earlier asset events, or the DAG
    # scheduled on yellow_taxi_trips (with catch-up) would later be sent to build months that are gone.
    from include.assets import YELLOW_TAXI_TRIPS
    from tests.e2e.asset_events import void_events

    void_events(YELLOW_TAXI_TRIPS, keep=lambda extra: extra.get("month") in months)


# -- the fee columns (V2) and the TLC's own parquet files ---------------------------------------------

def test_a_warehouse_of_v1_is_upgraded_in_place_by_the_next_load(tlc):
    """A warehouse made before V2__fee_columns.sql, with a month in it: the next load adds airport_fee and
    cbd_congestion_fee to the table and every partition - the old month keeps its rows and values (its
    file is not even rewritten: a catalog change), NULL in the new columns - and loads its own month."""
    from include.assets import YELLOW_TAXI_TRIPS
    from include.nyc_taxi import download_month, load_month, parquetize_month
    from include.warehouse import read_sql
    from tests.e2e.asset_events import void_events

    _pg().run("DROP TABLE IF EXISTS yellow_taxi_trips CASCADE")
    _pg().run(read_sql("yellow_taxi_trips/V1__create_table.sql"))
    _pg().run("CREATE TABLE yellow_taxi_trips_2021_01 PARTITION OF yellow_taxi_trips FOR VALUES IN ('2021-01-01')")
    _pg().run("INSERT INTO yellow_taxi_trips SELECT i % 2 + 1, TIMESTAMP '2021-01-01' + i * INTERVAL '1 minute', "
              "TIMESTAMP '2021-01-01 00:10' + i * INTERVAL '1 minute', i % 4, i / 10.0, 1, 'N', i % 265 + 1, 1, 1, "
              "5 + i / 4.0, 0.5, 0.5, 1, 0, 0.3, 7.3 + i / 4.0, 2.5, DATE '2021-01-01' FROM generate_series(1, 500) i")
    old = "SELECT count(*), sum(\"VendorID\"), sum(fare_amount), sum(total_amount), max(tpep_dropoff_datetime) " \
          "FROM yellow_taxi_trips WHERE data_month = '2021-01-01'"
    before, filenode = _pg().get_first(old), _pg().get_first("SELECT pg_relation_filenode('yellow_taxi_trips_2021_01')")

    download_month("2021-02", manual=True)  # the ingestion's steps, without the DAG run's checks and events
    parquetize_month("2021-02")
    assert load_month("2021-02") == ROWS

    assert _pg().get_first(old) == before and before[0] == 500
    assert _pg().get_first("SELECT pg_relation_filenode('yellow_taxi_trips_2021_01')") == filenode
    for table in ("yellow_taxi_trips", "yellow_taxi_trips_2021_01", "yellow_taxi_trips_2021_02"):
        types = dict(_pg().get_records("SELECT column_name, data_type FROM information_schema.columns "
                                       "WHERE table_name = %s", [table]))
        assert types["airport_fee"] == types["cbd_congestion_fee"] == "double precision", table
    assert _pg().get_records("SELECT data_month::text, count(*), count(airport_fee), count(cbd_congestion_fee) "
                             "FROM yellow_taxi_trips GROUP BY 1 ORDER BY 1") == [("2021-01-01", 500, 0, 0),
                                                                                  ("2021-02-01", ROWS, 0, 0)]
    # 2021-01 holds rows no pipeline loaded, and every other month is gone with the dropped table.
    void_events(YELLOW_TAXI_TRIPS, keep=lambda extra: extra.get("month") == "2021-02")


def test_the_fee_columns_cost_a_load_no_lock_once_added(tlc):
    """V2 runs before every load: once the columns exist it must not ask for the table's exclusive lock
    (ALTER TABLE would, IF NOT EXISTS or not), or each load would queue behind readers and every later
    reader behind it."""
    from include.nyc_taxi import TABLE
    from include.warehouse import apply_ddl

    ddl = _pg().get_conn()
    apply_ddl(ddl, TABLE)  # the table at its latest version
    reader = _pg().get_conn()
    try:
        reader.execute("SELECT count(*) FROM yellow_taxi_trips")  # its transaction stays open: ACCESS SHARE held
        ddl.execute("SET lock_timeout = '2s'")
        ddl.commit()
        apply_ddl(ddl, TABLE)
    finally:
        reader.rollback()
        reader.close()
        ddl.close()


def _serve(files: dict[str, bytes]):
    """A throwaway HTTP server: 200 with the body for a path in `files`, 403 (CloudFront's "not yet") otherwise."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            body = files.get(self.path)
            self.send_response(200 if body is not None else 403)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def _publisher_month(month: str, rows: int = 400) -> tuple[bytes, dict]:
    """A month of the TLC's parquet in the 2025 era's exact schema (Airport_fee, cbd_congestion_fee,
    int32 ids, large_string flag), with the NULLs real files have, and the sums the warehouse must show."""
    import io
    from datetime import timedelta

    import pyarrow as pa
    import pyarrow.parquet as pq

    start = datetime(int(month[:4]), int(month[5:]), 1)
    pickups = [start + timedelta(minutes=7 * i) for i in range(rows)]
    unknown = [i % 10 == 3 for i in range(rows)]  # the rows without passenger_count, RatecodeID, flag, fees
    table = pa.table({
        "VendorID": pa.array([1 + i % 2 for i in range(rows)], pa.int32()),
        "tpep_pickup_datetime": pa.array(pickups, pa.timestamp("us")),
        "tpep_dropoff_datetime": pa.array([p + timedelta(minutes=12) for p in pickups], pa.timestamp("us")),
        "passenger_count": pa.array([None if u else 1 + i % 3 for i, u in enumerate(unknown)], pa.int64()),
        "trip_distance": pa.array([1.5 + i % 7 for i in range(rows)], pa.float64()),
        "RatecodeID": pa.array([None if u else 1 for u in unknown], pa.int64()),
        "store_and_fwd_flag": pa.array([None if u else "N" for u in unknown], pa.large_string()),
        "PULocationID": pa.array([1 + i % 263 for i in range(rows)], pa.int32()),
        "DOLocationID": pa.array([263 - i % 263 for i in range(rows)], pa.int32()),
        "payment_type": pa.array([i % 5 for i in range(rows)], pa.int64()),
        **{c: pa.array([10.0 + i % 9 for i in range(rows)], pa.float64())
           for c in ("fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge",
                     "total_amount")},
        "congestion_surcharge": pa.array([None if u else 2.5 for u in unknown], pa.float64()),
        "Airport_fee": pa.array([None if u else (1.75 if i % 4 == 0 else 0.0) for i, u in enumerate(unknown)],
                                pa.float64()),
        "cbd_congestion_fee": pa.array([0.75 if i % 2 else 0.0 for i in range(rows)], pa.float64()),
    })
    body = io.BytesIO()
    pq.write_table(table, body, row_group_size=150)
    expected = {"rows": rows, "airport_fee": sum(v for v in table["Airport_fee"].to_pylist() if v is not None),
                "airport_fee_null": sum(unknown), "cbd": sum(table["cbd_congestion_fee"].to_pylist()),
                "vendor": sum(table["VendorID"].to_pylist()), "passengers": sum(filter(None, table["passenger_count"]
                                                                                       .to_pylist()))}
    return body.getvalue(), expected


def test_a_month_of_the_tlcs_own_parquet_lands_with_its_fees(stack):
    """The publisher's source, step by step against real S3 and Postgres (the TLC stand-in serves CSV only):
    the file stored as is under raw/ (.parquet), conformed from its era, loaded with both fees."""
    from include.nyc_taxi import download_month, load_month, parquetize_month

    month = "2025-03"
    body, expected = _publisher_month(month)
    server, base = _serve({f"/trip-data/yellow_tripdata_{month}.parquet": body})
    try:
        raw = download_month(month, url=f"{base}/trip-data/yellow_tripdata_{month}.parquet", manual=True)
    finally:
        server.shutdown()

    assert raw == f"raw/yellow_tripdata_{month}.parquet" and stack.get_object("nyc-tlc", raw) == body
    assert parquetize_month(month, raw) == f"parquet/yellow_tripdata_{month}.parquet"
    assert load_month(month) == expected["rows"]
    stored = _pg().get_first(
        "SELECT count(*), sum(airport_fee), count(*) FILTER (WHERE airport_fee IS NULL), sum(cbd_congestion_fee), "
        "sum(\"VendorID\"), sum(passenger_count) FROM yellow_taxi_trips WHERE data_month = %s", [f"{month}-01"])
    assert stored[0] == expected["rows"] and stored[2] == expected["airport_fee_null"]
    assert stored[1] == pytest.approx(expected["airport_fee"]) and stored[3] == pytest.approx(expected["cbd"])
    assert (stored[4], stored[5]) == (expected["vendor"], expected["passengers"])


def _publisher_steps(stack, month: str) -> int:
    """download -> parquetize -> load of a month from the TLC publisher stand-in (the DAG's steps, no run)."""
    from include.nyc_taxi import download_month, load_month, parquetize_month

    raw = download_month(month, url=f"{stack.standin_url}/trip-data/yellow_tripdata_{month}.parquet", manual=True)
    parquetize_month(month, raw)
    return load_month(month)


def test_every_era_of_the_publisher_standin_loads(standin):
    """One month of each era as the publisher stand-in serves it (its own reading of the same evidence):
    every row lands, the fees where the era has them."""
    standin.configure(tlc_rows_per_month=ROWS, tlc_now="2026-12-01T00:00:00+00:00")
    fees = "SELECT count(*), count(airport_fee), count(cbd_congestion_fee) FROM yellow_taxi_trips WHERE data_month = %s"
    for month, airport, cbd in (("2019-06", False, False), ("2021-03", True, False), ("2023-02", True, False),
                                ("2025-02", True, True), ("2026-07", True, True)):
        loaded = _publisher_steps(standin, month)
        rows, airport_fees, cbd_fees = _pg().get_first(fees, [f"{month}-01"])
        assert rows == loaded > ROWS, month  # the stand-in adds the pickups outside the month it serves
        assert (airport_fees > 0, cbd_fees > 0) == (airport, cbd), (month, airport_fees, cbd_fees)


@pytest.mark.parametrize(("fault", "month", "message"), [
    ("parquet_unknown_column", "2024-05", "unknown column 'ehail_fee' (double)"),
    ("parquet_missing_column", "2025-03", "missing column 'fare_amount' (double)"),
    ("parquet_wrong_type", "2020-02", "column 'tpep_pickup_datetime' is large_string, expected timestamp[us] or "
                                      "timestamp[ns]"),
    ("parquet_fractional_passenger_count", "2021-05", "column 'passenger_count' holds "),
])
def test_a_publisher_file_that_breaks_its_era_fails_parquetize(standin, fault, month, message):
    from include.nyc_taxi import TaxiDataError, download_month, parquetize_month
    from include.tlc_eras import era_of

    standin.configure(tlc_rows_per_month=ROWS, tlc_now="2026-12-01T00:00:00+00:00")
    standin.inject_fault("/trip-data/", fault, times=None)
    raw = download_month(month, url=f"{standin.standin_url}/trip-data/yellow_tripdata_{month}.parquet")

    with pytest.raises(TaxiDataError) as failure:
        parquetize_month(month, raw)

    assert str(failure.value).startswith(f"s3://nyc-tlc/{raw} ({month}): ")
    assert message in str(failure.value) and f"the {era_of(month).label}" in str(failure.value)


def test_a_cut_or_unpublished_parquet_download_replaces_nothing(stack):
    """A complete-looking answer with half the TLC's file (no PAR1 at the end) is retried and leaves the raw
    object as it was; CloudFront's 403 for a month not out yet skips a scheduled run, fails a manual one."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from include.nyc_taxi import TaxiDownloadError, download_month

    month = "2025-04"
    body, _ = _publisher_month(month)
    path = f"/trip-data/yellow_tripdata_{month}.parquet"
    server, base = _serve({path: body})
    try:
        download_month(month, url=base + path)
        key = f"raw/yellow_tripdata_{month}.parquet"
        good = stack.list_keys("nyc-tlc", key)
    finally:
        server.shutdown()
    server, base = _serve({path: body[: len(body) // 2]})
    try:
        with pytest.raises(TaxiDownloadError, match=r"is incomplete: the parquet file ends early .*; "
                                                    rf"s3://nyc-tlc/{key} left as it was \(retried\)"):
            download_month(month, url=base + path)
        with pytest.raises(AirflowSkipException, match=r"TLC file for 2025-05 is not published yet \(403 at "):
            download_month("2025-05", url=f"{base}/trip-data/yellow_tripdata_2025-05.parquet")
        with pytest.raises(AirflowFailException, match=r"TLC has no file for 2025-05 \(403 at .*about two months"):
            download_month("2025-05", url=f"{base}/trip-data/yellow_tripdata_2025-05.parquet", manual=True)
    finally:
        server.shutdown()
    assert stack.list_keys("nyc-tlc", key) == good  # same ETag: untouched


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
    events = _events(run)
    source = events["warehouse.yellow_taxi_trips"][0]["source"]
    assert source["url"].endswith("/yellow/yellow_tripdata_2021-06.csv.gz")
    assert events == {
        "nyc_tlc.raw": [{"month": "2021-06", "key": "raw/yellow_tripdata_2021-06.csv.gz", "etag": source["etag"],
                         "republished": False}],
        "nyc_tlc.parquet": [{"month": "2021-06", "key": "parquet/yellow_tripdata_2021-06.parquet", "rows": ROWS}],
        "warehouse.yellow_taxi_trips": [{
            "month": "2021-06", "rows": ROWS, "parquet_key": "parquet/yellow_tripdata_2021-06.parquet",
            "out_of_bounds": {"fare": 0, "distance": 0, "duration": 0, "pickup_outside_month": 0},
            "source": source, "republished": None, **interval}],
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
    monkeypatch.setattr(pg_binary, "encode_batch", encode)
    _never_reached_the_table_then_fixed(tlc, dagbag, "2021-05", before)
