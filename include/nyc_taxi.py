"""NYC TLC yellow-taxi months: download -> parquet -> S3 -> Postgres COPY -> check.

Every step streams in bounded pieces (HTTP chunks, pyarrow record batches, COPY buffers), so
memory stays flat whatever the month's size; steps hand over S3 keys only (tasks may run on
different workers), and each works on a local temp file it deletes.
"""

from __future__ import annotations

import contextlib
import os
import queue
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

CONN_ID = "nyc_tlc"
S3_CONN_ID = "aws_default"
BUCKET = "nyc-tlc"
TABLE = "yellow_taxi_trips"
DEFAULT_PATH = "/DataTalksClub/nyc-tlc-data/releases/download/yellow/yellow_tripdata_{month}.csv.gz"
BATCH_ROWS = 50_000  # rows per parquet batch / COPY chunk (~5 MB of CSV): bounds memory
ROW_GROUP_ROWS = 50_000  # rows per parquet row group (= BATCH_ROWS: one group per COPY chunk)
# The 18 columns of the TLC yellow CSV and their natural types.
INTEGER_COLUMNS = ("VendorID", "passenger_count", "RatecodeID", "PULocationID", "DOLocationID", "payment_type")
TIMESTAMP_COLUMNS = ("tpep_pickup_datetime", "tpep_dropoff_datetime")
TEXT_COLUMNS = ("store_and_fwd_flag",)
FLOAT_COLUMNS = ("trip_distance", "fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount",
                 "improvement_surcharge", "total_amount", "congestion_surcharge")
COLUMNS = ("VendorID", "tpep_pickup_datetime", "tpep_dropoff_datetime", "passenger_count", "trip_distance",
           "RatecodeID", "store_and_fwd_flag", "PULocationID", "DOLocationID", "payment_type", "fare_amount", "extra",
           "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge", "total_amount", "congestion_surcharge")


class TaxiDataError(AirflowFailException):
    """The month's file is broken (truncated, wrong columns, bad values): retrying cannot help."""


def month_of(data_interval_start) -> str:
    """`YYYY-MM` of the run's data interval start: the month a run ingests."""
    return data_interval_start.strftime("%Y-%m")


def raw_key(month: str) -> str:
    return f"raw/yellow_tripdata_{month}.csv.gz"


def parquet_key(month: str) -> str:
    return f"parquet/yellow_tripdata_{month}.parquet"


def _s3_client():
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # noqa: PLC0415

    return S3Hook(aws_conn_id=S3_CONN_ID).get_conn()


def _transfer_config():
    """Two streams of 8 MB parts: boto3's default of ten parallel parts costs ~100 MB of buffers."""
    from boto3.s3.transfer import TransferConfig  # noqa: PLC0415

    return TransferConfig(max_concurrency=2, multipart_chunksize=8 << 20)


def _upload(local: Path, key: str) -> None:
    _s3_client().upload_file(str(local), BUCKET, key, Config=_transfer_config())


def _download(key: str, local: Path) -> None:
    _s3_client().download_file(BUCKET, key, str(local), Config=_transfer_config())


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


def download_month(month: str, url: str | None = None) -> str:
    """Stream the month's CSV.gz to S3 (nyc-tlc/raw/...). A month not published yet (404) skips
    the run: there is nothing to load yet, and the next catch-up tries again."""
    import requests  # noqa: PLC0415

    from include.http_api import CONNECT_TIMEOUT_S, READ_TIMEOUT_S  # noqa: PLC0415

    url = url or download_url(month)
    with _temp_file(".csv.gz") as local, \
            requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as resp:
        if resp.status_code == 404:
            raise AirflowSkipException(f"TLC file for {month} is not published yet (404 at {url})")
        if resp.status_code != 200:
            raise RuntimeError(f"TLC download of {month} failed: HTTP {resp.status_code} at {url}")
        try:
            with local.open("wb") as out:
                for chunk in resp.iter_content(chunk_size=1 << 20):
                    out.write(chunk)
        except requests.RequestException as exc:
            raise RuntimeError(f"TLC download of {month} was cut off: {type(exc).__name__}: {exc}") from None
        _upload(local, raw_key(month))
    return raw_key(month)


def _read_options():
    import pyarrow as pa  # noqa: PLC0415
    from pyarrow import csv  # noqa: PLC0415

    types = {c: pa.int64() for c in INTEGER_COLUMNS}
    types |= {c: pa.timestamp("us") for c in TIMESTAMP_COLUMNS}
    types |= {c: pa.string() for c in TEXT_COLUMNS}
    types |= {c: pa.float64() for c in FLOAT_COLUMNS}
    return (
        # One thread, 1 MB blocks (~10k rows): measured +96 MB peak over the imports at 1M rows,
        # against +180 MB with 4 MB blocks, at about the same speed.
        csv.ReadOptions(block_size=1 << 20, use_threads=False),
        csv.ConvertOptions(column_types=types, include_columns=list(COLUMNS), strings_can_be_null=True,
                           timestamp_parsers=["%Y-%m-%d %H:%M:%S"]),
    )


def _release_memory_promptly() -> None:
    """pyarrow's allocator keeps freed memory for reuse; give it back at once instead, so a task's
    peak stays near one batch, not the file."""
    import pyarrow as pa  # noqa: PLC0415

    with contextlib.suppress(NotImplementedError):  # a build without jemalloc
        pa.jemalloc_set_decay_ms(0)


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


def csv_gz_to_parquet(source: Path, target: Path) -> int:
    """Convert in bounded batches with the TLC types; raises TaxiDataError naming the problem."""
    import gzip  # noqa: PLC0415

    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415
    from pyarrow import csv  # noqa: PLC0415

    with gzip.open(source, "rt", newline="") as handle:
        header = handle.readline().strip().split(",")
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise TaxiDataError(f"{source.name}: missing column(s) {', '.join(missing)} (header has {len(header)})")
    read, convert = _read_options()
    _release_memory_promptly()
    rows = 0
    try:
        with pa.input_stream(str(source), compression="gzip") as raw, \
                csv.open_csv(raw, read_options=read, convert_options=convert) as reader, \
                pq.ParquetWriter(target, parquet_schema(), compression="zstd") as writer:
            # Small parse blocks, but row groups of ~ROW_GROUP_ROWS: fewer, larger groups read faster.
            pending, pending_rows = [], 0
            for batch in reader:
                pending.append(batch.select(list(COLUMNS)))
                pending_rows += batch.num_rows
                if pending_rows >= ROW_GROUP_ROWS:
                    writer.write_table(pa.Table.from_batches(pending))
                    rows += pending_rows
                    pending, pending_rows = [], 0
            if pending:
                writer.write_table(pa.Table.from_batches(pending))
                rows += pending_rows
    except (EOFError, OSError) as exc:
        raise TaxiDataError(f"{source.name} is truncated or not gzip ({type(exc).__name__}: {exc}) after {rows} rows")\
            from None
    except pa.ArrowInvalid as exc:
        raise TaxiDataError(f"{source.name}: bad value - {exc}") from None
    return rows


def parquetize_month(month: str) -> str:
    with _temp_file(".csv.gz") as raw, _temp_file(".parquet") as parquet:
        _download(raw_key(month), raw)
        rows = csv_gz_to_parquet(raw, parquet)
        if rows == 0:
            raise TaxiDataError(f"{raw_key(month)} holds no rows")
        _upload(parquet, parquet_key(month))
    return parquet_key(month)


def ensure_table(cur) -> None:
    from include.warehouse import migrations  # noqa: PLC0415

    for ddl in migrations(TABLE):
        cur.execute(ddl)


def _partition(month: str) -> str:
    return f"{TABLE}_{month.replace('-', '_')}"


def copy_parquet_into_month(parquet: Path, month: str, conn) -> int:
    """In one transaction: (re)create the month's partition empty and COPY the file into it."""
    import io  # noqa: PLC0415

    import pyarrow.parquet as pq  # noqa: PLC0415
    from psycopg.copy import LibpqWriter  # noqa: PLC0415
    from pyarrow import csv  # noqa: PLC0415

    first_day = f"{month}-01"
    partition = _partition(month)
    columns = ", ".join(f'"{c}"' for c in COLUMNS)
    _release_memory_promptly()
    # Postgres parses COPY on its own core; converting the next batch to CSV meanwhile (pyarrow
    # releases the GIL) keeps it busy. A small queue bounds memory to a few batches.
    chunks: queue.Queue = queue.Queue(maxsize=2)
    counted = []

    def produce() -> None:
        try:
            for batch in pq.ParquetFile(parquet).iter_batches(batch_size=BATCH_ROWS):
                buffer = io.BytesIO()
                csv.write_csv(batch, buffer, csv.WriteOptions(include_header=False))
                counted.append(batch.num_rows)
                chunks.put(buffer.getvalue())
            chunks.put(None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            chunks.put(exc)

    with conn.cursor() as cur:
        ensure_table(cur)
        cur.execute(f"CREATE TABLE IF NOT EXISTS {partition} PARTITION OF {TABLE} FOR VALUES IN ('{first_day}')")
        cur.execute(f"TRUNCATE {partition}")  # a re-run replaces the month, never adds to it
        # data_month comes from the partition's default: no need to send it with every row.
        cur.execute(f"ALTER TABLE {partition} ALTER COLUMN data_month SET DEFAULT '{first_day}'")
        producer = threading.Thread(target=produce, name=f"parquet-to-csv-{month}", daemon=True)
        producer.start()
        # LibpqWriter sends as it goes; psycopg's default writer would queue up to 1024 buffers
        # (~128 MB) whenever the server parses slower than we produce.
        with cur.copy(f"COPY {partition} ({columns}) FROM STDIN (FORMAT csv)", writer=LibpqWriter(cur)) as copy:
            while (chunk := chunks.get()) is not None:
                if isinstance(chunk, BaseException):
                    raise chunk
                copy.write(chunk)
        producer.join()
    return sum(counted)


def load_month(month: str, conn_id: str = "warehouse_db") -> int:
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    with _temp_file(".parquet") as parquet:
        _download(parquet_key(month), parquet)
        conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
        try:
            with conn:  # commit on success, roll back (old month intact) on failure
                return copy_parquet_into_month(parquet, month, conn)
        finally:
            conn.close()


def check_month(month: str, conn_id: str = "warehouse_db") -> int:
    """Rows in the table for the month == rows in its parquet file; no NULL pickup time."""
    import pyarrow.parquet as pq  # noqa: PLC0415
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    with _temp_file(".parquet") as parquet:
        _download(parquet_key(month), parquet)
        expected = pq.ParquetFile(parquet).metadata.num_rows
    hook = PostgresHook(postgres_conn_id=conn_id)
    loaded, null_pickups = hook.get_first(
        f"SELECT count(*), count(*) FILTER (WHERE tpep_pickup_datetime IS NULL) FROM {TABLE} "  # noqa: S608
        "WHERE data_month = %s", [f"{month}-01"])
    if loaded != expected:
        raise TaxiDataError(f"{TABLE} holds {loaded} rows for {month}, its parquet file {expected}")
    if null_pickups:
        raise TaxiDataError(f"{TABLE} has {null_pickups} rows without pickup time for {month}")
    return loaded
