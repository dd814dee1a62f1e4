"""include/tlc_eras.py without servers: tiny parquet files in each era's exact schema (as the TLC's files
print in pyarrow) conformed to the project's parquet schema - values, types, the integral-double rule,
files that do not fit their era, bounded memory - and the download's parquet check."""

from __future__ import annotations

import gzip
import math
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include import nyc_taxi, tlc_eras
from include.nyc_taxi import TaxiDataError, parquet_schema
from include.tlc_eras import conform_parquet, era_of

# Three trips: the second has the NULLs real files have (passenger_count, RatecodeID, store_and_fwd_flag,
# congestion_surcharge, airport_fee on the same rows).
TRIPS = {
    "VendorID": [2, 1, 7],
    "tpep_pickup_datetime": [datetime(2024, 3, 1, 0, 5, 7), datetime(2024, 3, 15, 12), datetime(2024, 3, 31, 23, 59)],
    "tpep_dropoff_datetime": [datetime(2024, 3, 1, 0, 25), datetime(2024, 3, 15, 12, 30, 1), datetime(2024, 4, 1, 1)],
    "passenger_count": [1, None, 4],
    "trip_distance": [3.2, 0.0, 17.85],
    "RatecodeID": [1, None, 99],
    "store_and_fwd_flag": ["N", None, "Y"],
    "PULocationID": [142, 264, 132],
    "DOLocationID": [236, 265, 1],
    "payment_type": [1, 0, 2],
    "fare_amount": [14.5, 21.0, 70.0],
    "extra": [1.0, 0.0, 2.5],
    "mta_tax": [0.5, 0.5, 0.5],
    "tip_amount": [3.65, 0.0, 0.0],
    "tolls_amount": [0.0, 0.0, 6.94],
    "improvement_surcharge": [1.0, 1.0, 1.0],
    "total_amount": [21.95, 23.75, 83.69],
    "congestion_surcharge": [2.5, None, 0.0],
    "airport_fee": [0.0, None, 1.75],
    "cbd_congestion_fee": [0.75, 0.0, 0.0],
}
MONEY = ("trip_distance", "fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge",
         "total_amount", "congestion_surcharge")


def _era_schema(era: str, airport_fee_type: pa.DataType | None = None) -> pa.Schema:
    """The columns of the TLC's yellow files of an era, in file order, with the types pyarrow prints."""
    new = era != "2019"
    ids = pa.int32() if new else pa.int64()
    count = pa.int64() if new else pa.float64()
    fields = [("VendorID", ids), ("tpep_pickup_datetime", pa.timestamp("us")),
              ("tpep_dropoff_datetime", pa.timestamp("us")), ("passenger_count", count),
              ("trip_distance", pa.float64()), ("RatecodeID", count),
              ("store_and_fwd_flag", pa.large_string() if new else pa.string()),
              ("PULocationID", ids), ("DOLocationID", ids), ("payment_type", pa.int64()),
              *[(c, pa.float64()) for c in MONEY[1:-1]], ("congestion_surcharge", pa.float64()),
              ("Airport_fee" if new else "airport_fee", airport_fee_type or pa.float64())]
    if era in ("2025", "2026"):
        fields.append(("cbd_congestion_fee", pa.float64()))
    if era == "2026":
        fields.append(("request_source", pa.large_string()))
    return pa.schema(fields)


def _publisher_file(path, era: str, trips: dict | None = None, schema: pa.Schema | None = None, **kwargs):
    schema = schema or _era_schema(era)
    trips = trips or TRIPS
    columns = {"Airport_fee": trips["airport_fee"], "request_source": ["app", None, "street"], **trips}
    table = pa.table({f.name: pa.array(columns[f.name], f.type) for f in schema}, schema=schema)
    pq.write_table(table, path, **kwargs)
    return path


def _conform(tmp_path, source, month: str):
    target = tmp_path / "conformed.parquet"
    rows = conform_parquet(source, target, month, name=f"s3://nyc-tlc/raw/yellow_tripdata_{month}.parquet")
    return rows, pq.read_table(target)


@pytest.mark.parametrize(("era", "month"), [("2019", "2022-01"), ("2019", "2023-01"), ("2023", "2023-02"),
                                            ("2023", "2024-03"), ("2025", "2025-01"), ("2025", "2026-05"),
                                            ("2026", "2026-06")])
def test_every_value_survives_with_the_natural_types(tmp_path, era, month):
    source = _publisher_file(tmp_path / "in.parquet", era)

    rows, table = _conform(tmp_path, source, month)

    assert rows == 3 and table.schema == parquet_schema()
    expected = dict(TRIPS)
    if era in ("2019", "2023"):  # no congestion relief zone toll before 2025
        expected["cbd_congestion_fee"] = [None, None, None]
    assert table.to_pydict() == expected


def test_schema_types_are_the_warehouses():
    schema = parquet_schema()

    assert schema.names[-2:] == ["airport_fee", "cbd_congestion_fee"]
    assert {str(schema.field(c).type) for c in ("VendorID", "passenger_count", "RatecodeID", "PULocationID",
                                                 "DOLocationID", "payment_type")} == {"int64"}
    assert str(schema.field("tpep_pickup_datetime").type) == "timestamp[us]"
    assert str(schema.field("store_and_fwd_flag").type) == "string"
    assert {str(schema.field(c).type) for c in (*MONEY, "airport_fee", "cbd_congestion_fee")} == {"double"}


def test_an_airport_fee_typed_null_loads_as_null(tmp_path):
    """2019-01..2020-07 and 2020-10: the files have airport_fee, typed null (no value in any row)."""
    source = _publisher_file(tmp_path / "in.parquet", "2019", schema=_era_schema("2019", pa.null()),
                             trips={**TRIPS, "airport_fee": [None, None, None]})

    _, table = _conform(tmp_path, source, "2019-06")

    assert table.schema == parquet_schema()
    assert table["airport_fee"].to_pylist() == [None, None, None]
    assert table["fare_amount"].to_pylist() == TRIPS["fare_amount"]


def test_nanosecond_timestamps_are_accepted(tmp_path):
    schema = _era_schema("2023")
    schema = schema.set(1, pa.field("tpep_pickup_datetime", pa.timestamp("ns")))
    source = _publisher_file(tmp_path / "in.parquet", "2023", schema=schema, coerce_timestamps=None,
                             allow_truncated_timestamps=False)
    assert str(pq.read_schema(source).field("tpep_pickup_datetime").type) == "timestamp[ns]"

    _, table = _conform(tmp_path, source, "2024-03")

    assert table["tpep_pickup_datetime"].type == pa.timestamp("us")
    assert table["tpep_pickup_datetime"].to_pylist() == TRIPS["tpep_pickup_datetime"]


def test_double_counts_become_bigint_when_every_value_is_whole(tmp_path):
    trips = {**TRIPS, "passenger_count": [1.0, None, 6.0], "RatecodeID": [99.0, 1.0, None]}
    source = _publisher_file(tmp_path / "in.parquet", "2019", trips=trips)

    _, table = _conform(tmp_path, source, "2021-07")

    assert table["passenger_count"].type == table["RatecodeID"].type == pa.int64()
    assert table["passenger_count"].to_pylist() == [1, None, 6]
    assert table["RatecodeID"].to_pylist() == [99, 1, None]


@pytest.mark.parametrize("bad", [2.5, math.nan, math.inf, 1e19])
def test_a_count_that_is_not_a_whole_number_fails_the_month(tmp_path, bad):
    trips = {**TRIPS, "passenger_count": [1.0, None, 3.0], "RatecodeID": [1.0, None, bad]}
    # Several row groups: the row named is the file's, not the batch's.
    source = _publisher_file(tmp_path / "in.parquet", "2019", trips={c: v * 4 for c, v in trips.items()},
                             row_group_size=5)

    with pytest.raises(TaxiDataError) as failure:
        _conform(tmp_path, source, "2022-11")

    message = str(failure.value)
    assert message.startswith("s3://nyc-tlc/raw/yellow_tripdata_2022-11.parquet: column 'RatecodeID' holds ")
    assert f"holds {bad!r} at row 2, not a whole number" in message
    assert "the 2019 era (2019-01..2023-01) has counts as double" in message


def test_an_unknown_column_fails_the_month_naming_it_and_the_era(tmp_path):
    schema = _era_schema("2025").append(pa.field("request_source", pa.large_string()))

    with pytest.raises(TaxiDataError) as failure:
        _conform(tmp_path, _publisher_file(tmp_path / "in.parquet", "2025", schema=schema), "2025-09")

    message = str(failure.value)
    assert message.startswith("s3://nyc-tlc/raw/yellow_tripdata_2025-09.parquet: unknown column 'request_source' "
                              "(large_string) - the 2025 era (2025-01..2026-05) expects: VendorID int32, ")


def test_a_missing_column_fails_the_month_rather_than_loading_null(tmp_path):
    schema = _era_schema("2025").remove(_era_schema("2025").get_field_index("cbd_congestion_fee"))

    with pytest.raises(TaxiDataError, match=r"^s3://nyc-tlc/raw/yellow_tripdata_2025-02.parquet: missing column "
                                            r"'cbd_congestion_fee' \(double\) - the 2025 era \(2025-01\.\.2026-05\)"):
        _conform(tmp_path, _publisher_file(tmp_path / "in.parquet", "2025", schema=schema), "2025-02")


def test_a_file_of_another_era_fails_naming_each_difference(tmp_path):
    """A 2024 file served for a 2022 month (or the 2022 file republished in the new schema)."""
    source = _publisher_file(tmp_path / "in.parquet", "2023")

    with pytest.raises(TaxiDataError) as failure:
        _conform(tmp_path, source, "2022-05")

    message = str(failure.value)
    for problem in ("column 'VendorID' is int32, expected int64", "column 'passenger_count' is int64, expected double",
                    "column 'PULocationID' is int32, expected int64",
                    "unknown column 'Airport_fee' (double)", "missing column 'airport_fee' (double or null)",
                    "the 2019 era (2019-01..2023-01) expects:"):
        assert problem in message, problem


def test_a_wrong_timestamp_type_fails(tmp_path):
    schema = _era_schema("2023").set(2, pa.field("tpep_dropoff_datetime", pa.timestamp("us", "UTC")))

    with pytest.raises(TaxiDataError, match=r"column 'tpep_dropoff_datetime' is timestamp\[us, tz=UTC\], expected "
                                            r"timestamp\[us\] or timestamp\[ns\] - the 2023 era"):
        _conform(tmp_path, _publisher_file(tmp_path / "in.parquet", "2023", schema=schema), "2023-08")


def test_months_before_2019_are_refused_naming_the_supported_range(tmp_path):
    with pytest.raises(TaxiDataError, match=r"^2016-03: the TLC's parquet files are supported from 2019-01 on \(eras: "
                                            r"2019 era \(2019-01\.\.2023-01\), 2023 era"):
        era_of("2016-03")
    assert era_of("2019-01").name == "2019 era" and era_of("2099-12").name == "2026 era"


def test_the_eras_cover_every_month_from_2019_without_gaps():
    for earlier, later in zip(tlc_eras.ERAS, tlc_eras.ERAS[1:], strict=False):
        assert nyc_taxi._next_month(earlier.last) == later.first
    assert tlc_eras.ERAS[-1].last is None


def test_a_corrupt_file_fails_as_data(tmp_path):
    source = _publisher_file(tmp_path / "in.parquet", "2023")
    source.write_bytes(source.read_bytes()[:-20])

    with pytest.raises(TaxiDataError, match="is not a readable parquet file"):
        _conform(tmp_path, source, "2024-01")


def test_row_groups_of_the_output_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(tlc_eras, "ROW_GROUP_ROWS", 4)
    monkeypatch.setattr(tlc_eras, "BATCH_ROWS", 3)
    source = _publisher_file(tmp_path / "in.parquet", "2025", trips={c: v * 5 for c, v in TRIPS.items()},
                             row_group_size=7)

    rows, table = _conform(tmp_path, source, "2025-04")

    groups = pq.ParquetFile(tmp_path / "conformed.parquet").metadata
    assert rows == 15 and [groups.row_group(i).num_rows for i in range(groups.num_row_groups)] == [4, 4, 4, 3]
    assert table["total_amount"].to_pylist() == TRIPS["total_amount"] * 5


def _big_file(path, rows: int, row_group_size: int):
    import numpy as np

    rng = np.random.default_rng(7)
    schema = _era_schema("2025")
    start = np.datetime64("2025-03-01T00:00:00", "us")
    data = {}
    for f in schema:
        if f.name.endswith("datetime"):
            data[f.name] = pa.array(start + rng.integers(0, 31 * 86400, rows).astype("timedelta64[s]"))
        elif pa.types.is_integer(f.type):
            data[f.name] = pa.array(rng.integers(1, 265, rows)).cast(f.type)
        elif pa.types.is_floating(f.type):
            data[f.name] = pa.array(np.round(rng.random(rows) * 80, 2))
        else:
            data[f.name] = pa.array(np.where(rng.random(rows) < 0.01, "Y", "N")).cast(f.type)
    table = pa.table(data, schema=schema)
    pq.write_table(table, path, row_group_size=row_group_size)
    return table.nbytes


# Runs in a process of its own: a test worker's resident memory moves with whatever ran in it before.
# It converts a file, then one twice as long: with memory flat in rows the second conversion's peak is
# no higher than the first's. (The first conversion's own growth is mostly the allocator's arenas warming
# up, ~40 MB with glibc whatever the file: the Arrow pool's peak is what the conversion holds.)
MEASURE_CONVERSION = r"""
import json, sys, threading
from pathlib import Path

import pyarrow as pa
from include import nyc_taxi
from include.tlc_eras import conform_parquet

warm, single, double, out = (Path(arg) for arg in sys.argv[1:5])


def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssAnon:"))


def measure(source):
    pool = pa.proxy_memory_pool(pa.system_memory_pool())
    nyc_taxi._use_system_allocator = lambda: pa.set_memory_pool(pool)
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            done.wait(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        rows = conform_parquet(source, out, "2025-03")
    finally:
        done.set()
        sampler.join()
    return {"rows": rows, "arrow_peak": pool.max_memory(), "resident_peak": peak[0]}


measure(warm)  # code paged in
baseline = rss()
first, second = measure(single), measure(double)
print(json.dumps({"baseline": baseline, "single": first, "double": second}))
"""


@pytest.mark.parametrize("row_group_size", [300_000, 40_000], ids=["one-row-group", "several-row-groups"])
def test_memory_stays_flat_in_rows_whatever_the_row_groups(tmp_path, row_group_size):
    """Never the whole file, nor a whole row group: the decoded data held at once (Arrow's pool, every
    allocation of the conversion) is a few output row groups', and twice the rows take no more memory."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    decoded = _big_file(tmp_path / "single.parquet", 300_000, row_group_size)  # ~45 MB decoded
    _big_file(tmp_path / "double.parquet", 600_000, row_group_size)  # twice the rows, row groups alike
    warm = _publisher_file(tmp_path / "warm.parquet", "2025")
    result = subprocess.run([sys.executable, "-c", MEASURE_CONVERSION, str(warm), str(tmp_path / "single.parquet"),
                             str(tmp_path / "double.parquet"), str(tmp_path / "out.parquet")],
                            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MALLOC_ARENA_MAX": "2"})  # fewer arenas: steadier peaks
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    single, double = measured["single"], measured["double"]

    assert (single["rows"], double["rows"]) == (300_000, 600_000)
    # Decoded data: a few output row groups' worth (the pending rows, their concatenation, one batch, the
    # writer's pages), whatever the file's size or row groups.
    bound = 4 * tlc_eras.ROW_GROUP_ROWS * decoded / single["rows"]
    assert single["arrow_peak"] < bound < decoded / 2 and double["arrow_peak"] < bound, (measured, decoded)
    # Flat in rows: twice the file (45 MB more decoded data) raises the resident peak by a few MB at most
    # (measured 4-8 MB; reading the whole file would add 45 MB or more).
    assert double["resident_peak"] - single["resident_peak"] < decoded / 3, (measured, decoded)


# -- the download's check of a parquet body ----------------------------------------------------------

def _checked(body: bytes, chunk: int = 7) -> str | None:
    check = nyc_taxi._ParquetCheck()
    for at in range(0, len(body), chunk):
        check.feed(body[at:at + chunk])
    return check.problem(len(body))


def test_a_whole_parquet_file_passes_the_download_check(tmp_path):
    body = _publisher_file(tmp_path / "in.parquet", "2025").read_bytes()

    assert _checked(body) is None and _checked(body, chunk=1) is None and _checked(body, chunk=1 << 20) is None


@pytest.mark.parametrize("keep", [4, 5, 100, -9, -5, -4, -1])
def test_a_cut_parquet_body_is_caught(tmp_path, keep):
    """Cut anywhere - even right where a footer-length word and a PAR1 happen to line up."""
    body = _publisher_file(tmp_path / "in.parquet", "2025").read_bytes()

    assert _checked(body[:keep]).startswith("the parquet file ends early (")


def test_an_empty_or_foreign_body_is_caught(tmp_path):
    assert _checked(b"") == "an empty body (0 bytes)"
    assert _checked(gzip.compress(b"VendorID,fare\n")).startswith("not a parquet file (it starts with b'\\x1f")
    assert _checked(b"<html>403 Forbidden</html>") == "not a parquet file (it starts with b'<htm', not PAR1)"


def test_the_path_template_chooses_the_source():
    assert nyc_taxi.source_format("https://d37ci6vzurychx.cloudfront.net/trip-data/yellow_tripdata_2025-01.parquet") \
        == "parquet"
    assert nyc_taxi.source_format("https://github.com/DataTalksClub/nyc-tlc-data/releases/download/yellow/"
                                  "yellow_tripdata_2021-01.csv.gz?x=1") == "csv.gz"
    assert nyc_taxi.raw_key("2025-01", "parquet") == "raw/yellow_tripdata_2025-01.parquet"
    assert nyc_taxi.raw_key("2021-01") == "raw/yellow_tripdata_2021-01.csv.gz"
    with pytest.raises(nyc_taxi.AirflowFailException, match=r"must end in \.csv\.gz .* or \.parquet"):
        nyc_taxi.source_format("https://example.org/yellow_tripdata_2021-01.csv")


def test_the_csv_path_writes_the_fees_as_null(tmp_path):
    header = ",".join(nyc_taxi.CSV_COLUMNS)
    line = "1,2021-01-01 00:30:10,2021-01-01 00:36:12,1,2.1,1,N,142,43,2,8,3,0.5,0,0,0.3,11.8,2.5"
    source = tmp_path / "in.csv.gz"
    source.write_bytes(gzip.compress(f"{header}\n{line}\n,2021-01-02 10:00:00,2021-01-02 10:05:00,,1,,,1,2,,5,0,0.5,"
                                     "0,0,0.3,5.8,0\n".encode()))

    rows = nyc_taxi.csv_gz_to_parquet(source, tmp_path / "out.parquet")

    table = pq.read_table(tmp_path / "out.parquet")
    assert rows == 2 and table.schema == parquet_schema()
    assert table["airport_fee"].to_pylist() == table["cbd_congestion_fee"].to_pylist() == [None, None]
    assert table["fare_amount"].to_pylist() == [8.0, 5.0] and table["VendorID"].to_pylist() == [1, None]
