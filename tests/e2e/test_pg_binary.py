"""include.pg_binary against a real Postgres: what binary COPY stores must be what the Arrow batch
held, for every supported type, NULL pattern and text length."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import psycopg
import pyarrow as pa
import pytest

from include import pg_binary

TABLE_DDL = """CREATE TEMP TABLE binary_copy_probe (
    id bigint, small smallint, medium integer, big bigint, ratio real, amount double precision,
    flag boolean, day date, moment timestamp, instant timestamptz, label text)"""
COLUMNS = ["id", "small", "medium", "big", "ratio", "amount", "flag", "day", "moment", "instant", "label"]


def _batch(rows: list[tuple]):
    schema = pa.schema([("id", pa.int64()), ("small", pa.int16()), ("medium", pa.int32()), ("big", pa.int64()),
                        ("ratio", pa.float32()), ("amount", pa.float64()), ("flag", pa.bool_()),
                        ("day", pa.date32()), ("moment", pa.timestamp("us")), ("instant", pa.timestamp("us", "UTC")),
                        ("label", pa.string())])
    return pa.RecordBatch.from_pylist([dict(zip(COLUMNS, row, strict=True)) for row in rows], schema=schema)


def _round_trip(stack, batch) -> list[tuple]:
    with psycopg.connect(stack.cfg.warehouse_url().replace("postgresql+psycopg2", "postgresql")) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute(TABLE_DDL)
        statement = f"COPY binary_copy_probe ({', '.join(batch.schema.names)}) FROM STDIN (FORMAT binary)"
        with conn.cursor() as cur:
            with cur.copy(statement) as copy:
                copy.write(pg_binary.HEADER)
                copy.write(pg_binary.encode_batch(batch))
                copy.write(pg_binary.TRAILER)
            cur.execute(f"SELECT {', '.join(COLUMNS)} FROM binary_copy_probe ORDER BY id")
            return cur.fetchall()


ROWS = [
    (1, 1, 1, 1, 0.5, 1.25, True, date(2021, 1, 1), datetime(2021, 1, 1, 0, 0, 5),
     datetime(2021, 1, 1, 0, 0, 5, tzinfo=UTC), "N"),
    (2, None, None, None, None, None, None, None, None, None, None),  # every field NULL
    (3, -32768, -2**31, -2**63, -1.5, -0.0, False, date(1999, 12, 31), datetime(1969, 7, 20, 20, 17, 40, 123456),
     datetime(1900, 1, 1, tzinfo=UTC), ""),  # before both epochs, empty text
    (4, 32767, 2**31 - 1, 2**63 - 1, 3.25, 1e308, True, date(2100, 2, 28), datetime(2038, 1, 19, 3, 14, 8),
     datetime(2262, 4, 11, tzinfo=UTC), "Zürich – 東京 ✓"),  # extremes, multi-byte UTF-8
    (5, 7, None, 42, None, 2.5, None, date(2000, 1, 1), datetime(2000, 1, 1), None, "a" * 5000),
    (6, None, 9, None, 8.0, None, True, None, None, datetime(2000, 1, 1, tzinfo=UTC), "Y"),
]


def test_every_type_and_null_pattern_survives_the_round_trip(stack):
    stored = _round_trip(stack, _batch(ROWS))

    assert stored == [tuple(row) for row in ROWS]


def test_special_floats_survive(stack):
    rows = [(1, 0, 0, 0, math.inf, -math.inf, True, None, None, None, "x"),
            (2, 0, 0, 0, 0.0, math.nan, True, None, None, None, "x")]
    stored = _round_trip(stack, _batch(rows))

    assert stored[0][4:6] == (math.inf, -math.inf)
    assert math.isnan(stored[1][5])


def test_sliced_batches_encode_only_their_rows(stack):
    """A slice shares its parent's buffers at an offset: the encoder must honour the offset."""
    stored = _round_trip(stack, _batch(ROWS).slice(2, 3))

    assert stored == [tuple(row) for row in ROWS[2:5]]


def test_many_layouts_in_one_batch_keep_every_row(stack):
    """Text of many lengths and scattered NULLs make many row layouts; none may be lost or mixed."""
    rows = [(i, i % 7 if i % 3 else None, i, i * 1000, None, i / 4, i % 2 == 0, None,
             datetime(2021, 1, 1, i // 3600 % 24, i // 60 % 60, i % 60), None, "x" * (i % 37) if i % 5 else None)
            for i in range(2000)]
    stored = _round_trip(stack, _batch(rows))

    assert stored == rows


def test_an_empty_batch_encodes_to_nothing():
    assert bytes(pg_binary.encode_batch(_batch([]))) == b""


def test_an_unsupported_type_is_named():
    batch = pa.RecordBatch.from_pydict({"payload": pa.array([b"\x00"], pa.binary())})

    with pytest.raises(TypeError, match="no binary COPY encoding for Arrow type binary"):
        pg_binary.encode_batch(batch)
