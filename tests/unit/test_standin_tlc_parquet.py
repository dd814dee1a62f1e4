"""The TLC publisher stand-in: each era's parquet schema, fees and codes where they belong, publication on the
stand-in's clock, HEAD = GET, republishing, determinism and faults - over HTTP, as a loader sees it."""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.client
import io
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devstack.standins import tlc, tlc_publisher

ROOT = Path(__file__).resolve().parents[2]
PATH = "/trip-data/yellow_tripdata_{month}.parquet"
CSV_PATH = "/DataTalksClub/nyc-tlc-data/releases/download/yellow/yellow_tripdata_{month}.csv.gz"
NOW = "2026-12-01T00:00:00Z"  # every month up to 2026-09 is out
CRZ = set(tlc_publisher.CRZ_ZONES)
MONEY = ["fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge", "total_amount",
         "congestion_surcharge"]


def _expected_schema(ids, counts, flag, airport_name, airport_type, *extra) -> pa.Schema:
    """A schema written out as pyarrow prints the real files (sources in tlc_publisher's docstring)."""
    fields = [("VendorID", ids), ("tpep_pickup_datetime", pa.timestamp("us")), ("tpep_dropoff_datetime",
              pa.timestamp("us")), ("passenger_count", counts), ("trip_distance", pa.float64()),
              ("RatecodeID", counts), ("store_and_fwd_flag", flag), ("PULocationID", ids), ("DOLocationID", ids),
              ("payment_type", pa.int64())]
    fields += [(name, pa.float64()) for name in MONEY] + [(airport_name, airport_type)] + list(extra)
    return pa.schema(fields)


ERA_2019 = _expected_schema(pa.int64(), pa.float64(), pa.string(), "airport_fee", pa.float64())
ERA_2019_NULL_FEE = _expected_schema(pa.int64(), pa.float64(), pa.string(), "airport_fee", pa.null())
ERA_2023 = _expected_schema(pa.int32(), pa.int64(), pa.large_string(), "Airport_fee", pa.float64())
ERA_2025 = _expected_schema(pa.int32(), pa.int64(), pa.large_string(), "Airport_fee", pa.float64(),
                            ("cbd_congestion_fee", pa.float64()))
ERA_2026_06 = _expected_schema(pa.int32(), pa.int64(), pa.large_string(), "Airport_fee", pa.float64(),
                               ("cbd_congestion_fee", pa.float64()), ("request_source", pa.large_string()))


def _get(stack, month: str, method: str = "GET", headers: dict | None = None, path: str = PATH):
    """(status, body, headers) of a request to the stand-in; error statuses are answers, not exceptions."""
    request = urllib.request.Request(stack.standin_url + path.format(month=month), method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 - the local stand-in
            return resp.status, resp.read(), dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers.items())


def _table(stack, month: str) -> pa.Table:
    status, body, headers = _get(stack, month)
    assert status == 200, body[:300]
    assert int(headers["Content-Length"]) == len(body)
    return pq.read_table(io.BytesIO(body))


def _in_month(moment: datetime, month: str) -> bool:
    return moment.strftime("%Y-%m") == month


@pytest.fixture
def publisher(standin):
    standin.configure(tlc_rows_per_month=2000, tlc_now=NOW)
    return standin


# --- eras ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("month", "schema"), [
    ("2019-01", ERA_2019_NULL_FEE), ("2020-07", ERA_2019_NULL_FEE), ("2020-08", ERA_2019),
    ("2020-10", ERA_2019_NULL_FEE), ("2022-01", ERA_2019), ("2023-01", ERA_2019), ("2023-02", ERA_2023),
    ("2024-12", ERA_2023), ("2025-01", ERA_2025), ("2026-05", ERA_2025), ("2026-06", ERA_2026_06)])
def test_each_month_has_its_eras_schema(publisher, month, schema):
    table = _table(publisher, month)
    assert table.schema.equals(schema), f"{month}:\n{table.schema}"
    assert all(field.nullable for field in table.schema)


def test_unknown_rows_are_null_in_the_five_columns_and_payment_type_zero(publisher):
    publisher.configure(tlc_rows_per_month=20_000)
    for month, share in (("2021-04", (0.01, 0.03)), ("2024-04", (0.07, 0.13)), ("2025-04", (0.2, 0.3))):
        table = _table(publisher, month).to_pydict()
        unknown = [p == 0 for p in table["payment_type"]]
        airport = "airport_fee" if "airport_fee" in table else "Airport_fee"
        for column in ("passenger_count", "RatecodeID", "store_and_fwd_flag", "congestion_surcharge", airport):
            assert [value is None for value in table[column]] == unknown, (month, column)
        assert None not in table["VendorID"] and None not in table["total_amount"]
        assert share[0] < sum(unknown) / len(unknown) < share[1], month


def test_fees_only_where_they_belong(publisher):
    publisher.configure(tlc_rows_per_month=5000)
    old = _table(publisher, "2019-06").to_pydict()
    assert set(old["airport_fee"]) == {None} and set(old["improvement_surcharge"]) == {0.3}
    assert "cbd_congestion_fee" not in _table(publisher, "2024-12").column_names

    rows = _table(publisher, "2025-01").to_pylist()
    toll_start = datetime(2025, 1, 5)
    for row in rows:
        fee = row["cbd_congestion_fee"]
        in_zone = row["PULocationID"] in CRZ or row["DOLocationID"] in CRZ
        assert fee == (0.75 if in_zone and row["tpep_pickup_datetime"] >= toll_start else 0.0), row
        if row["payment_type"]:  # a known trip: every part of its total is there
            airport = 1.75 if row["PULocationID"] in (132, 138) else 0.0
            assert row["Airport_fee"] == airport and row["improvement_surcharge"] == 1.0
            parts = sum(row[name] for name in MONEY if name != "total_amount") + airport + fee
            assert row["total_amount"] == pytest.approx(parts, abs=0.011)
    charged = [row for row in rows if row["cbd_congestion_fee"]]
    assert 0.1 < len(charged) / len(rows) < 0.5
    assert any(row["tpep_pickup_datetime"] < toll_start and row["PULocationID"] in CRZ for row in rows)


def test_some_pickups_lie_outside_the_month(publisher):
    for month in ("2019-02", "2025-02"):
        pickups = _table(publisher, month).column("tpep_pickup_datetime").to_pylist()
        outside = [p for p in pickups if not _in_month(p, month)]
        assert len(outside) == 3 and len(pickups) == 2003
        assert min(outside).year == 2008  # a meter with a wrong clock
        assert any(p.strftime("%Y-%m") < month for p in outside) and any(p.strftime("%Y-%m") > month for p in outside)


def test_new_codes_appear_from_2023_and_more_in_2025(publisher):
    publisher.configure(tlc_rows_per_month=20_000)
    old, new = _table(publisher, "2021-05").to_pydict(), _table(publisher, "2025-05").to_pydict()
    assert set(old["VendorID"]) == {1, 2} and 99 not in old["RatecodeID"]
    vendors, ratecodes = Counter(new["VendorID"]), Counter(new["RatecodeID"])
    assert set(vendors) == {1, 2, 6, 7} and vendors[7] > vendors[6] > 0  # Helix, Myle
    assert 0.01 < ratecodes[99] / len(new["RatecodeID"]) < 0.03
    assert set(new["payment_type"]) == {0, 1, 2, 3}  # 0: Flex Fare


def test_the_parquet_trips_are_the_course_csv_trips(publisher):
    """Same seed, same draws: a month both sources serve holds the same trips (the TLC re-released its CSV
    history as parquet), plus the parquet file's pickups outside the month."""
    rows = _table(publisher, "2021-02").to_pylist()
    rows = [row for row in rows if _in_month(row["tpep_pickup_datetime"], "2021-02")]
    status, body, _ = _get(publisher, "2021-02", path=CSV_PATH)
    assert status == 200
    csv_rows = list(csv.DictReader(io.StringIO(gzip.decompress(body).decode())))
    assert len(rows) == len(csv_rows) == 2000
    for row, line in zip(rows, csv_rows, strict=True):
        assert row["tpep_pickup_datetime"].strftime("%Y-%m-%d %H:%M:%S") == line["tpep_pickup_datetime"]
        assert (row["PULocationID"], row["DOLocationID"]) == (int(line["PULocationID"]), int(line["DOLocationID"]))
        assert (row["fare_amount"], row["total_amount"]) == (float(line["fare_amount"]), float(line["total_amount"]))
        assert (row["payment_type"] == 0) == (line["VendorID"] == "")


def test_both_sources_put_the_same_trips_on_each_day_of_the_demand_model(publisher):
    """The per-day counts of the demand model (tlc.day_counts: weekday, holiday, weather, trend, noise) in the
    parquet file and in the course CSV, for the same rows; the month's total is its row count."""
    publisher.configure(tlc_rows_per_month=20_000, tlc_last_published="2021-12")
    month = "2021-11"  # Veterans Day (Thu 11th), Thanksgiving (Thu 25th)
    pickups = [p for p in _table(publisher, month).column("tpep_pickup_datetime").to_pylist() if _in_month(p, month)]
    status, body, _ = _get(publisher, month, path=CSV_PATH)
    assert status == 200
    csv_pickups = [line["tpep_pickup_datetime"][:10] for line in csv.DictReader(io.StringIO(gzip.decompress(body)
                                                                                               .decode()))]
    parquet_days, csv_days = Counter(p.strftime("%Y-%m-%d") for p in pickups), Counter(csv_pickups)
    model = [day["day"].isoformat() for day in tlc.demand(month)]
    assert [parquet_days[d] for d in model] == [csv_days[d] for d in model] == list(tlc.day_counts(month, 20_000))
    assert sum(parquet_days.values()) == 20_000
    assert parquet_days["2021-11-25"] < 0.8 * min(parquet_days[d] for d in ("2021-11-04", "2021-11-18"))


def test_real_row_counts_cover_2019_01_to_2026_10_and_scale_with_tlc_scale(publisher):
    months = [f"{y}-{m:02d}" for y in range(2019, 2027) for m in range(1, 13)][:94]
    assert sorted(tlc_publisher.REAL_ROWS) == months
    assert tlc_publisher.ESTIMATED_ROWS.issubset(months)
    assert tlc_publisher.REAL_ROWS["2025-09"] == 4_251_015
    assert sum(tlc_publisher.REAL_ROWS[f"2024-{m:02d}"] for m in range(1, 13)) == 41_169_720
    assert sum(tlc_publisher.REAL_ROWS[f"2025-{m:02d}"] for m in range(1, 13)) == 48_722_602
    assert sum(tlc_publisher.REAL_ROWS[f"2026-{m:02d}"] for m in range(1, 9)) == 29_703_355
    assert tlc_publisher.month_rows("2025-09", None, None) == 4_251_015
    assert tlc_publisher.month_rows("2025-09", None, 0.02) == tlc.month_rows("2025-09", None, 0.02)

    publisher.configure(tlc_rows_per_month=None, tlc_scale=0.0005)
    table = _table(publisher, "2025-09")
    rows = tlc_publisher.month_rows("2025-09", None, 0.0005)
    assert table.num_rows == rows + tlc_publisher.outside_rows(rows)


# --- publication, HEAD, republishing ----------------------------------------------------------------------

def test_a_month_appears_in_the_second_month_after_it(publisher):
    published = tlc_publisher.publication_time("2025-06")
    assert datetime(2025, 8, 17, tzinfo=UTC) <= published < datetime(2025, 8, 27, tzinfo=UTC)

    publisher.configure(tlc_now=(published - timedelta(seconds=1)).isoformat())
    for method in ("GET", "HEAD"):
        status, body, headers = _get(publisher, "2025-06", method)
        assert status == 403 and headers["Content-Type"] == "application/xml"
    assert b"<Code>AccessDenied</Code>" in _get(publisher, "2025-06")[1]
    assert _get(publisher, "2025-05")[0] == 200

    publisher.configure(tlc_now=published.isoformat())
    status, _, headers = _get(publisher, "2025-06", "HEAD")
    assert status == 200 and parsedate_to_datetime(headers["Last-Modified"]) == published
    assert _get(publisher, "2025-07")[0] == 403

    publisher.configure(tlc_publication_day=20, tlc_now="2025-08-19T23:59:59Z")
    assert _get(publisher, "2025-06", "HEAD")[0] == 403
    publisher.configure(tlc_now="2025-08-20T23:00:00Z")
    assert _get(publisher, "2025-06", "HEAD")[0] == 200


def test_other_keys_are_access_denied(publisher):
    for month in ("2018-12", "2024-13", "2027-01"):
        assert _get(publisher, month)[0] == 403
    status, body, _ = _get(publisher, "", path="/trip-data/green_tripdata_2024-01.parquet")
    assert status == 403 and b"AccessDenied" in body


def test_head_answers_the_headers_of_get(publisher):
    _, body, got = _get(publisher, "2024-07")
    status, head_body, head = _get(publisher, "2024-07", "HEAD")
    assert status == 200 and head_body == b""
    for name in ("Content-Length", "ETag", "Last-Modified", "Content-Type", "Accept-Ranges"):
        assert head[name] == got[name], name
    assert got["ETag"] == f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'  # S3's, below 8 MiB
    assert parsedate_to_datetime(got["Last-Modified"]) == tlc_publisher.publication_time("2024-07")


def test_byte_ranges_and_conditional_requests(publisher):
    _, body, headers = _get(publisher, "2024-08")
    status, tail, got = _get(publisher, "2024-08", headers={"Range": "bytes=-8"})
    assert status == 206 and tail == body[-8:] and tail.endswith(b"PAR1")
    assert got["Content-Range"] == f"bytes {len(body) - 8}-{len(body) - 1}/{len(body)}"
    status, part, _ = _get(publisher, "2024-08", headers={"Range": "bytes=4-99"})
    assert status == 206 and part == body[4:100]
    assert _get(publisher, "2024-08", headers={"Range": "bytes=0-"})[:2] == (206, body)
    assert _get(publisher, "2024-08", headers={"Range": f"bytes={len(body)}-"})[0] == 416
    assert _get(publisher, "2024-08", headers={"If-None-Match": headers["ETag"]})[0] == 304
    assert _get(publisher, "2024-08", headers={"If-Modified-Since": headers["Last-Modified"]})[0] == 304
    assert _get(publisher, "2024-08", headers={"If-None-Match": '"another"'})[0] == 200


def test_a_republished_month_has_a_new_etag_and_last_modified(publisher):
    _, first, before = _get(publisher, "2024-03")
    published = tlc_publisher.publication_time("2024-03")
    publisher.configure(tlc_republished={"2024-03": 1})
    _, second, after = _get(publisher, "2024-03")
    assert after["ETag"] != before["ETag"]
    assert parsedate_to_datetime(after["Last-Modified"]) == published + timedelta(days=30)
    assert pq.read_metadata(io.BytesIO(second)).num_rows == pq.read_metadata(io.BytesIO(first)).num_rows + 2
    assert _get(publisher, "2024-03", headers={"If-None-Match": before["ETag"]})[0] == 200

    # Not yet at the stand-in's clock: the first version still.
    publisher.configure(tlc_now=(published + timedelta(days=29)).isoformat())
    assert _get(publisher, "2024-03", "HEAD")[2]["ETag"] == before["ETag"]
    publisher.configure(tlc_now=NOW, tlc_republished={"2024-03": ["2025-01-02T03:04:05Z", "2025-02-03T04:05:06Z"]})
    _, third, latest = _get(publisher, "2024-03")
    assert parsedate_to_datetime(latest["Last-Modified"]) == datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert pq.read_metadata(io.BytesIO(third)).num_rows == pq.read_metadata(io.BytesIO(first)).num_rows + 4


# --- determinism, cache, row groups --------------------------------------------------------------------------

def test_same_bytes_twice_and_in_a_fresh_interpreter(publisher):
    _, body, _ = _get(publisher, "2023-09")
    assert _get(publisher, "2023-09")[1] == body
    code = ("import hashlib, io; from devstack.standins.tlc_publisher import write_month; sink = io.BytesIO(); "
            "write_month(sink, '2023-09', 2000); print(hashlib.sha256(sink.getvalue()).hexdigest())")
    fresh = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == hashlib.sha256(body).hexdigest()
    assert _get(publisher, "2023-10")[1] != body


def test_a_month_is_written_once_into_the_state_folder(publisher):
    publisher.configure(tlc_rows_per_month=2345)
    folder = Path(publisher.cfg.state_dir) / "standins" / "tlc-publisher"
    _, body, _ = _get(publisher, "2022-05")
    [cached] = folder.glob("yellow_tripdata_2022-05.2345.r0.*.parquet")
    assert cached.read_bytes() == body and not list(folder.glob(".*.part"))
    mtime = cached.stat().st_mtime_ns
    assert _get(publisher, "2022-05")[1] == body and cached.stat().st_mtime_ns == mtime


def test_row_groups_bound_what_is_held_in_memory():
    sink = io.BytesIO()
    tlc_publisher.write_month(sink, "2024-02", 25_000, row_group_rows=10_000)
    metadata = pq.read_metadata(io.BytesIO(sink.getvalue()))
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [10_000, 10_000, 5_003]


# --- faults ----------------------------------------------------------------------------------------------------

def test_era_mismatch_faults_change_the_schema_as_named(publisher):
    good = _table(publisher, "2024-09")
    for kind in tlc_publisher.FILE_FAULTS:
        publisher.inject_fault("/trip-data/", kind, times=1)
        broken = _table(publisher, "2024-09")
        if kind == "parquet_unknown_column":
            assert broken.column_names == good.column_names + ["ehail_fee"]
        elif kind == "parquet_missing_column":
            assert broken.column_names == [name for name in good.column_names if name != "fare_amount"]
        elif kind == "parquet_wrong_type":
            assert broken.schema.field("tpep_pickup_datetime").type == pa.large_string()
            assert broken.column("tpep_pickup_datetime")[0].as_py() == \
                good.column("tpep_pickup_datetime")[0].as_py().strftime("%Y-%m-%d %H:%M:%S")
        else:
            counts = broken.column("passenger_count")
            assert counts.type == pa.float64()
            assert any(value is not None and value != int(value) for value in counts.to_pylist())
    assert _table(publisher, "2024-09").equals(good)  # faulted files are never cached


def test_transport_faults_cut_the_file(publisher):
    _, body, _ = _get(publisher, "2024-10")
    publisher.inject_fault("/trip-data/", "truncated", times=1)
    status, cut, headers = _get(publisher, "2024-10")
    assert status == 200 and cut == body[: len(body) // 2] and int(headers["Content-Length"]) == len(cut)
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(io.BytesIO(cut))

    publisher.inject_fault("/trip-data/", "dropped", times=1)
    with pytest.raises(http.client.IncompleteRead):
        _get(publisher, "2024-10")

    publisher.inject_fault("/trip-data/", "http_503", times=1)
    status, body, _ = _get(publisher, "2024-10")
    assert status == 503 and b"<Code>SlowDown</Code>" in body


def test_without_pyarrow_the_server_runs_and_this_path_answers_500():
    """The python:3.12-slim image of api-standins has no pyarrow: the other stand-ins serve, this path says 500."""
    import time

    from devstack.services import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-S", "-m", "devstack.standins", "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}" + PATH.format(month="2024-01")
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).close()  # noqa: S310 - the local stand-in
                pytest.fail("a parquet file without pyarrow")
            except urllib.error.HTTPError as exc:
                assert exc.code == 500 and b"<Code>InternalError</Code>" in exc.read()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the stand-ins did not answer within 20 s"
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(10)
    assert "install pyarrow" in server.stdout.read()
