"""NYC TLC yellow-taxi months: download -> parquet -> S3 -> Postgres COPY into a staged table -> the
checks of include/quality.py on it -> swapped in as the month's partition of yellow_taxi_trips. A
month that fails a check never reaches the table: readers keep the month's previous data.

Two sources, chosen by the `nyc_tlc` connection's path template: ending in `.parquet`, the TLC's own
monthly parquet files (the default), whose schema eras include/tlc_eras.py conforms to the project's
parquet schema; ending in `.csv.gz`, the course's frozen CSV mirror (2019-01 to 2021-07).

Every step streams in bounded pieces (HTTP chunks, CSV blocks, parquet row groups, COPY buffers), so
memory stays flat whatever the month's size; steps hand over S3 keys only (tasks may run on
different workers). download and parquetize work on local temp files they delete; load reads the
parquet file straight from S3.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

CONN_ID = "nyc_tlc"
S3_CONN_ID = "aws_default"
BUCKET = "nyc-tlc"
TABLE = "yellow_taxi_trips"
LOADED_FILES_TABLE = "tlc_loaded_files"
# The TLC's own monthly files (its CloudFront distribution), the shipped default; the course's CSV.gz
# mirror (2019-01 to 2021-07, frozen) when the connection's path template says so.
DEFAULT_PATH = "/trip-data/yellow_tripdata_{month}.parquet"
MIRROR_PATH = "/DataTalksClub/nyc-tlc-data/releases/download/yellow/yellow_tripdata_{month}.csv.gz"
MIRROR_MONTHS = ("2019-01", "2021-07")
# What a path template's ending says the source is: the course mirror or the TLC's own files.
CSV_GZ, PARQUET = "csv.gz", "parquet"
BATCH_ROWS = 10_000  # rows encoded per COPY write (~2 MB)
# Rows per parquet row group: the load reads one group at a time, so this bounds its memory
# (measured +28 MB at 10k, +37 MB at 20k, +64 MB at 50k rows; the file is as small at 20k).
ROW_GROUP_ROWS = 20_000
# The warehouse's columns and their natural types: the 18 of the TLC yellow CSV, then the two fees only
# the TLC's parquet files have (include/sql/yellow_taxi_trips/V2__fee_columns.sql; NULL where a file has none).
INTEGER_COLUMNS = ("VendorID", "passenger_count", "RatecodeID", "PULocationID", "DOLocationID", "payment_type")
TIMESTAMP_COLUMNS = ("tpep_pickup_datetime", "tpep_dropoff_datetime")
TEXT_COLUMNS = ("store_and_fwd_flag",)
FEE_COLUMNS = ("airport_fee", "cbd_congestion_fee")
FLOAT_COLUMNS = ("trip_distance", "fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount",
                 "improvement_surcharge", "total_amount", "congestion_surcharge", *FEE_COLUMNS)
CSV_COLUMNS = ("VendorID", "tpep_pickup_datetime", "tpep_dropoff_datetime", "passenger_count", "trip_distance",
               "RatecodeID", "store_and_fwd_flag", "PULocationID", "DOLocationID", "payment_type", "fare_amount",
               "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge", "total_amount",
               "congestion_surcharge")
COLUMNS = (*CSV_COLUMNS, *FEE_COLUMNS)


class TaxiDataError(AirflowFailException):
    """The month's file is broken (truncated, wrong columns, bad values): retrying cannot help."""


class TaxiDownloadError(RuntimeError):
    """The download went wrong in transit (cut off, short, empty, not a whole gzip or parquet file): retried."""


# The first month of the default catch-up (NYC_TAXI_START_MONTH overrides it): congestion pricing began on
# 2025-01-05 (the TLC's cbd_congestion_fee) - a break in Manhattan's taxi demand, so the history a demand
# model learns from starts with it - and 2025-01 on is the TLC's current schema era (include/tlc_eras.py).
# Open-Meteo's forecasts as issued (Previous Model Runs API) exist from 2024-01, before it.
FIRST_MONTH = "2025-01"
MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"


def _next_month(month: str) -> str:
    year, mon = map(int, month.split("-"))
    return f"{year + mon // 12:04d}-{mon % 12 + 1:02d}"


def monthly_timetable(first_month: str, last_month: str | None = None):
    """One run per month from first_month (to last_month, or open-ended), each on the 2nd of the month
    after at 06:00 UTC: include/timetables.py says why it is a timetable of our own."""
    from include.timetables import MonthlyAfterMonthTimetable  # noqa: PLC0415

    return MonthlyAfterMonthTimetable(first_month, last_month)


def month_of_run(logical_date, month: str | None = None) -> str:
    """`YYYY-MM` a run loads: the `month` param when given (a manual run), else the month before
    the run's logical date - a scheduled run on 2021-02-02 loads January."""
    import re  # noqa: PLC0415

    if month:
        if not re.match(MONTH_PATTERN, month):
            raise AirflowFailException(f"param month={month!r} is not a month: use YYYY-MM, e.g. 2021-03")
        return month
    if logical_date is None:
        raise AirflowFailException(
            "this run has neither a logical date nor the `month` param: trigger it with month=YYYY-MM "
            "(UI: the trigger form's `month` field; CLI: `airflow dags trigger nyc_taxi_ingestion "
            "--conf '{\"month\": \"2021-03\"}'`; `make dag DATE=...`).")
    year, mon = logical_date.year, logical_date.month
    return f"{year - (mon == 1):04d}-{(mon - 2) % 12 + 1:02d}"


def raw_key(month: str, source: str = CSV_GZ) -> str:
    """Where the month's file is kept as downloaded: `.csv.gz` (course mirror) or `.parquet` (the TLC's)."""
    return f"raw/yellow_tripdata_{month}.{source}"


def source_format(url: str) -> str:
    """CSV_GZ or PARQUET, from how the file's URL (the path template) ends."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    path = urlsplit(url).path
    for source in (PARQUET, CSV_GZ):
        if path.endswith(f".{source}"):
            return source
    raise AirflowFailException(
        f"the `{CONN_ID}` connection's path template gives {url}: it must end in .csv.gz (the course mirror, "
        "e.g. /DataTalksClub/nyc-tlc-data/releases/download/yellow/yellow_tripdata_{month}.csv.gz) or .parquet "
        "(the TLC's own files, e.g. /trip-data/yellow_tripdata_{month}.parquet)")


def parquet_key(month: str) -> str:
    return f"parquet/yellow_tripdata_{month}.parquet"


def _filesystem():
    from include.arrow_s3 import s3_filesystem  # noqa: PLC0415

    return s3_filesystem(S3_CONN_ID)


@contextmanager
def _temp_file(suffix: str):
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="nyc-taxi-")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def download_url(month: str) -> str:
    """The month's file URL from the `nyc_tlc` connection (host, and the path template in its extra)."""
    from airflow.sdk import BaseHook  # noqa: PLC0415

    from include.http_api import base_url_from_connection  # noqa: PLC0415

    conn = BaseHook.get_connection(CONN_ID)
    template = conn.extra_dejson.get("path") or DEFAULT_PATH
    return base_url_from_connection(conn) + template.format(month=month)


def download_month(month: str, url: str | None = None, manual: bool = False) -> str:
    """Stream the month's file as is to S3 (nyc-tlc/raw/..., `.csv.gz` or `.parquet` as the URL ends)
    and return its key; see download_month_with_source."""
    return download_month_with_source(month, url, manual)["key"]


def download_month_with_source(month: str, url: str | None = None, manual: bool = False) -> dict:
    """Stream the month's file as is to S3 and return {"key", "source"}: source is the file's version
    as the server answered it ({"url", "etag", "last_modified", "bytes"}; published with the month in
    tlc_loaded_files). A month not published (404; the TLC's CloudFront also answers 403) skips a
    scheduled run - there is nothing to load yet - and fails a manual one, whose user asked for that
    month and must not get a green run that loaded nothing."""
    import requests  # noqa: PLC0415

    from include.arrow_s3 import upload_file  # noqa: PLC0415
    from include.http_api import CONNECT_TIMEOUT_S, READ_TIMEOUT_S  # noqa: PLC0415

    url = url or download_url(month)
    source = source_format(url)
    unpublished = (404,) if source == CSV_GZ else (403, 404)
    if source == PARQUET:
        from include.tlc_eras import era_of  # noqa: PLC0415

        era_of(month)  # a month no era covers fails before its file is fetched
    key = f"s3://{BUCKET}/{raw_key(month, source)}"
    with _temp_file(f".{source}") as local, \
            requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as resp:
        if resp.status_code in unpublished:
            if manual:
                has = (f"the course mirror has {MIRROR_MONTHS[0]} to {MIRROR_MONTHS[1]}" if source == CSV_GZ else
                       "the TLC publishes a month about two months after it ends")
                raise AirflowFailException(
                    f"TLC has no file for {month} ({resp.status_code} at {url}): nothing to load. Trigger with the "
                    f"`month` param set to a published month ({has}).")
            raise AirflowSkipException(f"TLC file for {month} is not published yet ({resp.status_code} at {url})")
        if resp.status_code != 200:
            raise TaxiDownloadError(f"TLC download of {month} failed: HTTP {resp.status_code} at {url}; "
                                    f"{key} left as it was")
        received = 0
        failure = None
        check = _GzipCheck() if source == CSV_GZ else _ParquetCheck()
        try:
            with local.open("wb") as out:
                for chunk in resp.iter_content(chunk_size=1 << 20):
                    out.write(chunk)
                    received += len(chunk)
                    check.feed(chunk)  # while the next chunk arrives: no second pass over the file
        except requests.RequestException as exc:
            failure = f"cut off after {received:,} bytes ({type(exc).__name__})"
        promised = resp.headers.get("Content-Length")
        if failure is None and promised is not None and received != int(promised):
            failure = f"{received:,} of the {int(promised):,} bytes promised"
        if failure is None:
            failure = check.problem(received)
        if failure is not None:
            # Nothing replaces the raw object unless the whole file arrived: a short body must not
            # overwrite a good month (it did, as 0 bytes, before this check).
            raise TaxiDownloadError(f"TLC download of {month} from {url} is incomplete: {failure}; {key} left as "
                                    "it was (retried)")
        upload_file(_filesystem(), local, BUCKET, raw_key(month, source))
        version = {"url": url, "etag": resp.headers.get("ETag"), "last_modified": _http_date(resp.headers),
                   "bytes": received}
    return {"key": raw_key(month, source), "source": version}


def _http_date(headers) -> str | None:
    """Last-Modified as ISO 8601 (UTC), or None when absent or unreadable."""
    from email.utils import parsedate_to_datetime  # noqa: PLC0415

    try:
        return parsedate_to_datetime(headers["Last-Modified"]).isoformat()
    except (KeyError, TypeError, ValueError):
        return None


class _GzipCheck:
    """Is a byte stream one whole gzip file (or several concatenated members)? Fed as it downloads:
    it decompresses each piece and throws the output away, so a stream cut short (no trailer),
    corrupted (CRC or size mismatch) or not gzip at all is caught before anything uses the file."""

    def __init__(self):
        import zlib  # noqa: PLC0415

        self._zlib = zlib
        self._decompressor = zlib.decompressobj(wbits=31)
        self._error: str | None = None

    def feed(self, data: bytes) -> None:
        while data and self._error is None:
            try:
                self._decompressor.decompress(data)
            except self._zlib.error as exc:
                self._error = f"not a valid gzip file ({exc})"
                return
            data = self._decompressor.unused_data if self._decompressor.eof else b""
            if data:  # another gzip member follows
                self._decompressor = self._zlib.decompressobj(wbits=31)

    def problem(self, size: int) -> str | None:
        if size == 0:
            return "an empty body (0 bytes)"
        if self._error is not None:
            return self._error
        if not self._decompressor.eof:
            return f"the gzip stream ends early ({size:,} bytes, no gzip trailer)"
        return None


class _ParquetCheck:
    """Is a byte stream a whole parquet file? A parquet file starts and ends with the magic `PAR1`,
    and the 4 bytes before the final magic give the footer's length, which must fit in the file
    (https://parquet.apache.org/docs/file-format/). Fed as it downloads, keeping only the first and
    the last 8 bytes: a body cut anywhere loses the final magic (or the footer it points to)."""

    MAGIC = b"PAR1"

    def __init__(self):
        self._head = b""
        self._tail = b""

    def feed(self, data: bytes) -> None:
        if len(self._head) < 4:
            self._head += data[:4 - len(self._head)]
        self._tail = (self._tail + data[-8:])[-8:]

    def problem(self, size: int) -> str | None:
        if size == 0:
            return "an empty body (0 bytes)"
        if self._head != self.MAGIC:
            return f"not a parquet file (it starts with {self._head!r}, not PAR1)"
        if size < 12 or self._tail[4:] != self.MAGIC:
            return f"the parquet file ends early ({size:,} bytes, no PAR1 at the end)"
        footer = int.from_bytes(self._tail[:4], "little")
        if footer > size - 12:
            return f"the parquet file ends early ({size:,} bytes, its footer claims {footer:,})"
        return None


def _read_options():
    import pyarrow as pa  # noqa: PLC0415
    from pyarrow import csv  # noqa: PLC0415

    types = {c: pa.int64() for c in INTEGER_COLUMNS}
    types |= {c: pa.timestamp("us") for c in TIMESTAMP_COLUMNS}
    types |= {c: pa.string() for c in TEXT_COLUMNS}
    types |= {c: pa.float64() for c in FLOAT_COLUMNS if c in CSV_COLUMNS}
    return (
        # One thread, 256 kB blocks (~2.5k rows): measured +88 MB peak over the imports at 2M rows,
        # against +124 MB with 1 MB blocks and +180 MB with 4 MB, at the same speed.
        csv.ReadOptions(block_size=256 << 10, use_threads=False),
        csv.ConvertOptions(column_types=types, include_columns=list(CSV_COLUMNS), strings_can_be_null=True,
                           timestamp_parsers=["%Y-%m-%d %H:%M:%S"]),
    )


def _use_system_allocator() -> None:
    """pyarrow's default allocator (mimalloc) keeps freed segments for reuse: measured +30 MB peak
    in the load and parquetize steps against the system allocator, at the same speed."""
    import pyarrow as pa  # noqa: PLC0415

    pa.set_memory_pool(pa.system_memory_pool())


def parquet_schema():
    import pyarrow as pa  # noqa: PLC0415

    fields = []
    for column in COLUMNS:
        if column in INTEGER_COLUMNS:
            fields.append(pa.field(column, pa.int64()))
        elif column in TIMESTAMP_COLUMNS:
            fields.append(pa.field(column, pa.timestamp("us")))
        elif column in TEXT_COLUMNS:
            fields.append(pa.field(column, pa.string()))
        else:
            fields.append(pa.field(column, pa.float64()))
    return pa.schema(fields)


def csv_gz_to_parquet(source: Path, target: Path, name: str | None = None) -> int:
    """Convert in bounded batches with the TLC types (the fees the CSV has no column for: NULL);
    raises TaxiDataError naming the problem and the file by `name` (its S3 key; default the local
    file's name)."""
    import gzip  # noqa: PLC0415

    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415
    from pyarrow import csv  # noqa: PLC0415

    name = name or source.name
    try:
        with gzip.open(source, "rt", newline="") as handle:
            header = handle.readline().strip().split(",")
    except (EOFError, OSError) as exc:
        raise TaxiDataError(f"{name} is truncated or not gzip ({type(exc).__name__}: {exc})") from None
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise TaxiDataError(f"{name}: missing column(s) {', '.join(missing)} (header has {len(header)})")
    read, convert = _read_options()
    _use_system_allocator()
    schema = parquet_schema()
    rows = 0
    try:
        with pa.input_stream(str(source), compression="gzip") as raw, \
                csv.open_csv(raw, read_options=read, convert_options=convert) as reader, \
                pq.ParquetWriter(target, schema, compression="zstd") as writer:
            # Small parse blocks, but row groups of ~ROW_GROUP_ROWS: fewer, larger groups read faster.
            pending, pending_rows = [], 0
            for batch in reader:
                fees = [pa.nulls(batch.num_rows, schema.field(c).type) for c in FEE_COLUMNS]
                pending.append(pa.RecordBatch.from_arrays([*batch.select(list(CSV_COLUMNS)).columns, *fees],
                                                          schema=schema))
                pending_rows += batch.num_rows
                if pending_rows >= ROW_GROUP_ROWS:
                    writer.write_table(pa.Table.from_batches(pending))
                    rows += pending_rows
                    pending, pending_rows = [], 0
            if pending:
                writer.write_table(pa.Table.from_batches(pending))
                rows += pending_rows
    except (EOFError, OSError) as exc:
        raise TaxiDataError(f"{name} is truncated or not gzip ({type(exc).__name__}: {exc}) after {rows} rows")\
            from None
    except pa.ArrowInvalid as exc:
        raise TaxiDataError(f"{name}: bad value - {exc}") from None
    return rows


def parquetize_month(month: str, raw: str | None = None) -> str:
    """The month's raw object (`raw`: its key, as download_month returned it; default: the key the
    `nyc_tlc` connection's source gives) -> the project's parquet file in S3 (parquet_key): a CSV.gz
    converted with the TLC types, or the TLC's parquet conformed from its era (include/tlc_eras.py)."""
    from include.arrow_s3 import download_file, upload_file  # noqa: PLC0415

    raw = raw or raw_key(month, source_format(download_url(month)))
    source = PARQUET if raw.endswith(f".{PARQUET}") else CSV_GZ
    name = f"s3://{BUCKET}/{raw} ({month})"
    fs = _filesystem()
    # Local files on both sides: the parquet object is replaced only once the whole month converted.
    with _temp_file(f".{source}") as local, _temp_file(".parquet") as parquet:
        download_file(fs, BUCKET, raw, local)
        if source == PARQUET:
            from include.tlc_eras import conform_parquet  # noqa: PLC0415

            rows = conform_parquet(local, parquet, month, name=name)
        else:
            rows = csv_gz_to_parquet(local, parquet, name=name)
        if rows == 0:
            raise TaxiDataError(f"{name} holds no rows")
        upload_file(fs, parquet, BUCKET, parquet_key(month))
    return parquet_key(month)


def _partition(month: str) -> str:
    return f"{TABLE}_{month.replace('-', '_')}"


def staged_table(month: str) -> str:
    """Where a month's load waits for its checks: a plain table beside yellow_taxi_trips, not one of
    its partitions, so no reader of the table sees it until publish swaps it in."""
    return f"{_partition(month)}_staged"


# How long the swap may wait for readers of the table to finish before the publish gives up (and is
# retried): a reader holding the table for longer must not freeze every later reader behind the
# swap's lock request.
SWAP_LOCK_TIMEOUT = "60s"


def copy_parquet_into_staging(parquet, month: str, conn) -> int:
    """COPY the parquet file into the month's staged table (staged_table) and commit; the table's
    month stays as it was. A failure leaves no staged table behind, a re-run replaces it.
    `parquet` is a path or an open pyarrow file (e.g. straight from S3)."""
    import pyarrow.parquet as pq  # noqa: PLC0415
    from psycopg.copy import LibpqWriter  # noqa: PLC0415

    from include import pg_binary  # noqa: PLC0415
    from include.warehouse import apply_ddl, transaction  # noqa: PLC0415

    first_day = f"{month}-01"
    staged = staged_table(month)
    columns = ", ".join(f'"{c}"' for c in COLUMNS)
    _use_system_allocator()
    # pre_buffer: one ranged read per row group rather than one per column chunk (S3 round trips).
    source = pq.ParquetFile(parquet, pre_buffer=True)
    if source.schema_arrow != parquet_schema():
        raise TaxiDataError(f"parquet file of {month} does not have the TLC schema: {source.schema_arrow}")
    rows = 0
    apply_ddl(conn, TABLE)  # the partitioned table itself (concurrent first loads: see warehouse.py)
    with transaction(conn), conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {staged}")  # an earlier load's, that failed its checks
        cur.execute(f"CREATE TABLE {staged} (LIKE {TABLE} INCLUDING DEFAULTS)")
        # data_month comes from the default: no need to send it with every row. The CHECK lets
        # ATTACH skip scanning the month to prove it belongs there.
        cur.execute(f"ALTER TABLE {staged} ALTER COLUMN data_month SET DEFAULT '{first_day}'")
        cur.execute(f"ALTER TABLE {staged} ADD CONSTRAINT {_partition(month)}_data_month "
                    f"CHECK (data_month = DATE '{first_day}')")
        # Binary COPY: Postgres stores the values as sent instead of parsing text, about half its
        # work for this table. LibpqWriter sends as it goes; psycopg's default writer would queue up
        # to 1024 buffers (~128 MB) whenever the server is slower than we encode. One row group at
        # a time (iter_batches would read ahead: +40 MB).
        # FREEZE (allowed: the table was created in this transaction) writes the rows already
        # visible to all, so the first reader - the check - does not rewrite every page (hint bits).
        statement = f"COPY {staged} ({columns}) FROM STDIN (FORMAT binary, FREEZE)"
        with cur.copy(statement, writer=LibpqWriter(cur)) as copy:
            copy.write(pg_binary.HEADER)
            for group in range(source.num_row_groups):
                for batch in source.read_row_group(group, use_threads=False).to_batches(max_chunksize=BATCH_ROWS):
                    copy.write(pg_binary.encode_batch(batch))
                    rows += batch.num_rows
            copy.write(pg_binary.TRAILER)
    return rows


def swap_in_staged_month(month: str, conn, source: dict | None = None) -> bool:
    """Replace the month's partition with its staged table (detach, drop, rename, attach) in one
    transaction: readers of the table see the old month until the commit, and only the swap itself,
    milliseconds long, takes the table's exclusive lock. A re-run replaces the month, never adds to it.
    False when there is nothing staged: an earlier attempt of the same publish already swapped it in.
    `source` (download_month_with_source's, plus "rows") is recorded in tlc_loaded_files in the same
    transaction: the file version readers see."""
    from include.warehouse import apply_ddl, read_sql, transaction  # noqa: PLC0415

    partition, staged = _partition(month), staged_table(month)
    if source is not None:
        apply_ddl(conn, LOADED_FILES_TABLE)
    with transaction(conn), conn.cursor() as cur:
        cur.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
        cur.execute("SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL", [staged, partition])
        has_staged, has_partition = cur.fetchone()
        if not has_staged:
            if has_partition:
                return False
            raise TaxiDataError(f"{month}: no staged load ({staged}) and no partition to publish: run load first")
        if has_partition:
            cur.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {partition}")
            cur.execute(f"DROP TABLE {partition}")
        cur.execute(f"ALTER TABLE {staged} RENAME TO {partition}")
        cur.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {partition} FOR VALUES IN ('{month}-01')")
        if source is not None:
            cur.execute(read_sql("tlc_loaded_files/record.sql"), {
                "data_month": f"{month}-01", "url": source["url"], "etag": source.get("etag"),
                "last_modified": source.get("last_modified"), "bytes": source["bytes"], "rows": source.get("rows")})
    return True


def copy_parquet_into_month(parquet, month: str, conn) -> int:
    """Stage the parquet file and swap it in at once, without checks in between (tools and tests;
    the DAG checks the staged table before its publish task swaps it in)."""
    rows = copy_parquet_into_staging(parquet, month, conn)
    swap_in_staged_month(month, conn)
    return rows


def _warehouse_conn(conn_id: str):
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    return PostgresHook(postgres_conn_id=conn_id).get_conn()


def stage_month(month: str, conn_id: str = "warehouse_db") -> int:
    """The month's parquet object from S3 into its staged table (committed; the month as it was)."""
    parquet = _filesystem().open_input_file(f"{BUCKET}/{parquet_key(month)}")
    conn = _warehouse_conn(conn_id)
    try:
        return copy_parquet_into_staging(parquet, month, conn)
    finally:
        conn.close()
        parquet.close()


def publish_month(month: str, conn_id: str = "warehouse_db", source: dict | None = None) -> bool:
    """Swap the month's staged table in (after its checks passed) and record its file version;
    see swap_in_staged_month."""
    conn = _warehouse_conn(conn_id)
    try:
        return swap_in_staged_month(month, conn, source)
    finally:
        conn.close()


def load_month(month: str, conn_id: str = "warehouse_db") -> int:
    """Stage and swap in at once (no checks between): tools and tests."""
    parquet = _filesystem().open_input_file(f"{BUCKET}/{parquet_key(month)}")
    conn = _warehouse_conn(conn_id)
    try:  # each step commits on success and rolls back (old month intact) on failure
        return copy_parquet_into_month(parquet, month, conn)
    finally:
        conn.close()
        parquet.close()


def loaded_source(month: str, conn_id: str = "warehouse_db") -> dict | None:
    """The file version the month's rows in yellow_taxi_trips came from (tlc_loaded_files), or None:
    never loaded, or loaded before versions were recorded."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    hook = PostgresHook(postgres_conn_id=conn_id)
    if not hook.get_first("SELECT to_regclass(%s) IS NOT NULL", [LOADED_FILES_TABLE])[0]:
        return None
    row = hook.get_first("SELECT url, etag, last_modified, bytes, rows FROM tlc_loaded_files WHERE data_month = %s",
                         [f"{month}-01"])
    if row is None:
        return None
    url, etag, modified, size, rows = row
    return {"url": url, "etag": etag, "last_modified": modified.isoformat() if modified else None, "bytes": size,
            "rows": rows}


def republication(previous: dict | None, current: dict) -> dict | None:
    """How the file changed since the version the warehouse holds: None when it did not (or when the
    month was never loaded); else {"previous": ..., "current": ...} with ETag and Last-Modified. The
    ETag decides (S3's content hash: a new file, whatever its date); Last-Modified only when a server
    sends no ETag. A switch of source (mirror <-> publisher) is a new file too."""
    if previous is None:
        return None
    keys = ("etag", "last_modified", "url")
    if previous.get("url") == current.get("url"):
        if previous.get("etag") and current.get("etag"):
            if previous["etag"] == current["etag"]:
                return None
        elif previous.get("last_modified") == current.get("last_modified"):
            return None
    return {"previous": {k: previous.get(k) for k in keys}, "current": {k: current.get(k) for k in keys}}


def parquet_row_count(month: str) -> int:
    """Rows in the month's parquet object, from its footer (two small ranged GETs): what the
    warehouse partition must hold after the load (the `rows_match_parquet` check)."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    with _filesystem().open_input_file(f"{BUCKET}/{parquet_key(month)}") as parquet:
        return pq.ParquetFile(parquet).metadata.num_rows


def out_of_bounds_counts(month: str, conn_id: str = "warehouse_db") -> dict[str, int]:
    """How many of the month's trips break each plausibility bound (include/quality.py,
    TLC_OUT_OF_BOUNDS): kept in the table, counted here for the asset event - one scan."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    from include.quality import TLC_OUT_OF_BOUNDS  # noqa: PLC0415

    counts = ", ".join(f"COUNT(*) FILTER (WHERE {predicate})" for predicate in TLC_OUT_OF_BOUNDS.values())
    row = PostgresHook(postgres_conn_id=conn_id).get_first(
        f"SELECT {counts} FROM {TABLE} WHERE data_month = %s", [f"{month}-01"])  # noqa: S608
    return dict(zip(TLC_OUT_OF_BOUNDS, row, strict=True))
