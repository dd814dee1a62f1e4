"""The TLC's own yellow-taxi parquet files, every schema era, conformed to the project's parquet schema.

The TLC publishes one file per month at
`https://d37ci6vzurychx.cloudfront.net/trip-data/yellow_tripdata_YYYY-MM.parquet` and re-released the
whole history as parquet in May 2022 (toddwschneider/nyc-taxi-data PR #54). The files do not share one
schema: column names and Arrow types change between eras. Each era below is an explicit spec - for
every warehouse column, the publisher's column by its exact name and the Arrow types accepted (as
pyarrow prints them) - and `conform_parquet` turns a month's file into `parquet_schema()` of
include/nyc_taxi.py, or fails the month at once naming the file, the column and the era it expected.

Evidence (Arrow types read from the files' footers by others; no file of the TLC is in this repo):
- 2022-01 as printed by pyarrow (VendorID int64, timestamp[us], passenger_count/RatecodeID double,
  store_and_fwd_flag string, PU/DOLocationID int64, airport_fee double); 2025-01 and 2025-09 as printed
  by pyarrow (VendorID int32, passenger_count/RatecodeID int64, store_and_fwd_flag large_string,
  PU/DOLocationID int32, Airport_fee, cbd_congestion_fee) - public notebooks and READMEs.
- Month-by-month changes, from the footers of consecutive files: a data-lake manifest built from
  2019-01..2026-08 (airport_fee null -> double at 2020-08, back to null at 2020-10, double from
  2020-11; at 2023-02 airport_fee renamed Airport_fee, VendorID/PULocationID/DOLocationID int64 ->
  int32, passenger_count/RatecodeID double -> int64, store_and_fwd_flag string -> large_string;
  cbd_congestion_fee from 2025-01; request_source from 2026-06), and snowch/vast-docker-compose-examples
  (yellow_taxi_data_pt0_schema.ipynb, physical types 2009-01..2024-08) which shows the same 2020 and
  2023-02 changes and the older ones below.
- Column names of every file: lykmapipo/NYC-TLC-Trip-Data, data/trips-metadata/yellow_tripmetadata_<year>.csv
  (19 columns with airport_fee from 2019-01 to 2023-01, Airport_fee from 2023-02).
- toddwschneider/nyc-taxi-data: fix_yellow_parquet_schemas.R renames Airport_fee to airport_fee and
  casts all-null columns (R's vctrs_unspecified: Arrow `null`) to numbers; issue #57 cbd_congestion_fee.
- The publisher stand-in (devstack/standins/tlc_publisher.py), written from the same evidence on its own,
  serves the same eras: tests/e2e/test_nyc_taxi.py loads a month of each through this module.

A column typed `null` in a file holds no value in any row (Arrow's null type has no storage): it is
loaded as NULL, like a warehouse column the era has no source for - both are part of the spec, never a
fallback for a column that is missing or renamed.

Supported: 2019-01 to the latest month. Not supported, on purpose:
- 2009-2010: other column names (vendor_name, Trip_Pickup_DateTime, start_lon/start_lat, fare_amt ...
  in 2009; vendor_id, pickup_datetime, pickup_longitude ... in 2010), coordinates instead of taxi
  zones, text timestamps (PR #55 of toddwschneider/nyc-taxi-data: "do not follow the same schema as
  the 2011- files").
- 2011-2018: the re-released files carry the 2019 names, and taxi zone ids even for the months whose
  original CSVs had coordinates (until 2016-06), but their types churn month by month
  (congestion_surcharge and airport_fee flip between null and double, improvement_surcharge null in
  2014-08, passenger_count and RatecodeID int64 until 2018-06) and only physical types are on record
  for them: an era for them would be a guess. A month there fails naming the supported range.

Memory: the file is read in batches of BATCH_ROWS rows through a 1 MB buffered stream per column
chunk (never a whole row group, however large the publisher's are), and written in row groups of
ROW_GROUP_ROWS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from include.nyc_taxi import COLUMNS, ROW_GROUP_ROWS, TaxiDataError

BATCH_ROWS = 10_000  # rows decoded at a time from the publisher's file
READ_BUFFER = 64 << 10  # bytes buffered per column chunk while decoding (0 would read whole chunks)

TIMESTAMP = ("timestamp[us]", "timestamp[ns]")
TEXT = ("string", "large_string")  # large_string from 2023-02; either holds the same text
# Columns whose names and types have not changed in any supported era.
_STABLE = {
    "tpep_pickup_datetime": ("tpep_pickup_datetime", TIMESTAMP),
    "tpep_dropoff_datetime": ("tpep_dropoff_datetime", TIMESTAMP),
    "trip_distance": ("trip_distance", ("double",)),
    "store_and_fwd_flag": ("store_and_fwd_flag", TEXT),
    "payment_type": ("payment_type", ("int64",)),
    **{money: (money, ("double",)) for money in ("fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount",
                                                 "improvement_surcharge", "total_amount", "congestion_surcharge")},
}


@dataclass(frozen=True)
class Source:
    """Where a warehouse column comes from in an era: the publisher's column (exact name) and the
    Arrow types it may have there. `None` as a warehouse column's source: the era has no such column
    and the warehouse gets NULL (a fee that did not exist yet)."""

    column: str
    types: tuple[str, ...]


@dataclass(frozen=True)
class Era:
    name: str
    first: str  # first month, YYYY-MM
    last: str | None  # last month; None: until further notice
    sources: dict[str, Source | None]
    # The publisher's columns this era has that the warehouse does not hold (by name; never read).
    ignored: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        return f"{self.name} ({self.first}..{self.last or ''})"

    def covers(self, month: str) -> bool:
        return self.first <= month and (self.last is None or month <= self.last)


def _era(name: str, first: str, last: str | None, ignored: tuple[str, ...] = (), **changed) -> Era:
    specs = {**_STABLE, **changed}
    if set(specs) != set(COLUMNS):  # every warehouse column has a spec, and nothing else does
        raise ValueError(f"{name}: specs for {sorted(set(specs) ^ set(COLUMNS))} missing or not warehouse columns")
    sources = {column: (Source(*specs[column]) if specs[column] else None) for column in COLUMNS}
    return Era(name, first, last, sources, ignored)


ERAS = (
    # 2019-01..2023-01: ids int64, counts as double, airport_fee in lower case - typed null (no value)
    # until 2020-07 and in 2020-10, double otherwise.
    _era("2019 era", "2019-01", "2023-01",
         VendorID=("VendorID", ("int64",)),
         passenger_count=("passenger_count", ("double",)), RatecodeID=("RatecodeID", ("double",)),
         PULocationID=("PULocationID", ("int64",)), DOLocationID=("DOLocationID", ("int64",)),
         airport_fee=("airport_fee", ("double", "null")), cbd_congestion_fee=None),
    # 2023-02..2024-12: ids int32, counts int64, Airport_fee with a capital A.
    _era("2023 era", "2023-02", "2024-12",
         VendorID=("VendorID", ("int32",)),
         passenger_count=("passenger_count", ("int64",)), RatecodeID=("RatecodeID", ("int64",)),
         PULocationID=("PULocationID", ("int32",)), DOLocationID=("DOLocationID", ("int32",)),
         airport_fee=("Airport_fee", ("double",)), cbd_congestion_fee=None),
    # 2025-01..2026-05: plus cbd_congestion_fee, the Manhattan congestion relief zone toll (from 2025-01-05).
    _era("2025 era", "2025-01", "2026-05",
         VendorID=("VendorID", ("int32",)),
         passenger_count=("passenger_count", ("int64",)), RatecodeID=("RatecodeID", ("int64",)),
         PULocationID=("PULocationID", ("int32",)), DOLocationID=("DOLocationID", ("int32",)),
         airport_fee=("Airport_fee", ("double",)), cbd_congestion_fee=("cbd_congestion_fee", ("double",))),
    # 2026-06 on: plus request_source (seen in the footers from 2026-06; its meaning is not in the data
    # dictionary we have): known, not loaded - the warehouse has no column for it yet.
    _era("2026 era", "2026-06", None, ignored=("request_source",),
         VendorID=("VendorID", ("int32",)),
         passenger_count=("passenger_count", ("int64",)), RatecodeID=("RatecodeID", ("int64",)),
         PULocationID=("PULocationID", ("int32",)), DOLocationID=("DOLocationID", ("int32",)),
         airport_fee=("Airport_fee", ("double",)), cbd_congestion_fee=("cbd_congestion_fee", ("double",))),
)
FIRST_SUPPORTED = ERAS[0].first


def era_of(month: str) -> Era:
    """The era whose spec `month`'s file must follow; TaxiDataError for a month before FIRST_SUPPORTED."""
    for era in ERAS:
        if era.covers(month):
            return era
    raise TaxiDataError(
        f"{month}: the TLC's parquet files are supported from {FIRST_SUPPORTED} on (eras: "
        f"{', '.join(era.label for era in ERAS)}); earlier files have other columns or unverified types "
        "(include/tlc_eras.py)")


def _check_schema(schema, era: Era, name: str) -> None:
    """Every problem of the file's columns against the era's spec, in one message, before any row is read."""
    wanted = {source.column: source for source in era.sources.values() if source is not None}
    present = set(schema.names)
    problems = []
    for column in schema.names:
        if column in era.ignored:
            continue
        if column not in wanted:
            problems.append(f"unknown column {column!r} ({schema.field(column).type})")
        elif str(schema.field(column).type) not in wanted[column].types:
            problems.append(f"column {column!r} is {schema.field(column).type}, expected "
                            f"{' or '.join(wanted[column].types)}")
    problems += [f"missing column {column!r} ({' or '.join(source.types)})"
                 for column, source in wanted.items() if column not in present]
    if problems:
        expected = ", ".join(f"{column} {'|'.join(source.types)}" for column, source in wanted.items())
        ignored = f" (ignored: {', '.join(era.ignored)})" if era.ignored else ""
        raise TaxiDataError(f"{name}: {'; '.join(problems)} - the {era.label} expects: {expected}{ignored}")


def _whole_numbers(array, column: str, era: Era, name: str, offset: int):
    """`array` (double) as int64 when every value is a whole number in int64's range (NULL stays
    NULL); else TaxiDataError naming the first offending value and its row."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    fine = pc.and_(pc.and_(pc.is_finite(array), pc.equal(pc.floor(array), array)),
                   pc.less(pc.abs(array), 2.0 ** 63))
    bad = pc.invert(pc.fill_null(fine, True))
    if pc.any(bad).as_py():
        row = pc.index(bad, True).as_py()
        raise TaxiDataError(f"{name}: column {column!r} holds {array[row].as_py()!r} at row {offset + row:,}, not a "
                            f"whole number - the {era.label} has counts as double, loaded as bigint only when "
                            "every value is integral")
    return array.cast(pa.int64())


def _conform_column(array, target, column: str, era: Era, name: str, offset: int):
    import pyarrow as pa  # noqa: PLC0415

    if array.type == target:
        return array
    if pa.types.is_null(array.type):  # the file has the column, typed null: no row has a value
        return pa.nulls(len(array), target)
    if pa.types.is_floating(array.type) and pa.types.is_integer(target):
        return _whole_numbers(array, column, era, name, offset)
    try:  # int32 -> int64, large_string -> string, timestamp[ns] -> [us]: safe casts (lossless or an error)
        return array.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise TaxiDataError(f"{name}: column {column!r} ({array.type}) near row {offset:,} does not fit "
                            f"{target}: {exc} (the {era.label})") from None


def conform_parquet(source: Path, target: Path, month: str, name: str | None = None) -> int:
    """Convert the TLC's parquet file of `month` (local path) to `target` in the project's parquet
    schema, batch by batch; returns the rows written. Raises TaxiDataError naming the file by `name`
    (its S3 key; default the local file's name), the column and the era for anything the month's
    era does not allow."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    from include.nyc_taxi import _use_system_allocator, parquet_schema  # noqa: PLC0415

    name = name or source.name
    era = era_of(month)
    _use_system_allocator()  # before the reader and writer are made: each keeps the pool it was made with
    try:
        reader = pq.ParquetFile(source, buffer_size=READ_BUFFER, pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise TaxiDataError(f"{name} is not a readable parquet file ({type(exc).__name__}: {exc})") from None
    _check_schema(reader.schema_arrow, era, name)
    schema = parquet_schema()
    plan = [(field_, era.sources[field_.name]) for field_ in schema]
    columns = [source_.column for _, source_ in plan if source_ is not None]
    rows = 0
    try:
        with pq.ParquetWriter(target, schema, compression="zstd") as writer:
            pending, pending_rows = [], 0
            for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=columns, use_threads=False):
                arrays = [_conform_column(batch.column(source_.column), field_.type, source_.column, era, name,
                                          rows + pending_rows)
                          if source_ is not None else pa.nulls(batch.num_rows, field_.type)
                          for field_, source_ in plan]
                pending.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
                pending_rows += batch.num_rows
                if pending_rows >= ROW_GROUP_ROWS:  # whole row groups of ROW_GROUP_ROWS; the rest waits
                    table = pa.Table.from_batches(pending)
                    whole = pending_rows - pending_rows % ROW_GROUP_ROWS
                    writer.write_table(table.slice(0, whole), row_group_size=ROW_GROUP_ROWS)
                    rows += whole
                    pending = table.slice(whole).to_batches()
                    pending_rows -= whole
            if pending_rows:
                writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=ROW_GROUP_ROWS)
                rows += pending_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise TaxiDataError(f"{name} is truncated or corrupt ({type(exc).__name__}: {exc}) after {rows:,} rows") \
            from None
    return rows
