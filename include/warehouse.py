"""warehouse_db (the storage Postgres pipelines load into): versioned DDL and loads.

DDL lives in include/sql/<table>/V<n>__*.sql and is applied in version order, idempotently,
before the load that needs it, in a short transaction of its own under a transaction-scoped
advisory lock: `CREATE TABLE IF NOT EXISTS` is not safe when two sessions run it at once (the
loser fails on pg_type's unique index - two catch-up runs loading their first month together did),
so every DDL statement of the warehouse runs one session at a time.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

WAREHOUSE_CONN_ID = "warehouse_db"
SQL_DIR = Path(__file__).parent / "sql"
# Key of the advisory lock every warehouse DDL statement is run under (any constant bigint that
# no other application on this database uses).
DDL_LOCK_KEY = 7_311_200_481


def read_sql(relative: str) -> str:
    return (SQL_DIR / relative).read_text()


def migrations(table: str) -> list[str]:
    """The table's DDL files in version order (V1__, V2__, ...)."""
    files = sorted((SQL_DIR / table).glob("V*__*.sql"), key=lambda p: int(re.match(r"V(\d+)__", p.name).group(1)))
    return [path.read_text() for path in files]


@contextmanager
def transaction(conn):
    """Commit on success, roll back on any failure - psycopg 3 and psycopg2 alike, without
    closing the connection (psycopg 3's `with conn` would)."""
    try:
        yield conn
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def apply_ddl(conn, table: str, *statements: str) -> None:
    """Bring `table` up to its latest version (its V<n>__ files), then run `statements` (e.g. a
    partition), in one committed transaction while holding the warehouse DDL lock - safe when
    several tasks do it at once, cheap when there is nothing to do."""
    with transaction(conn), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [DDL_LOCK_KEY])
        for ddl in [*migrations(table), *statements]:
            cur.execute(ddl)


def upsert_exchange_rate(record: dict, conn_id: str = WAREHOUSE_CONN_ID) -> int:
    """Create exchange_rates if needed, then upsert the record on (symbol, rate_at) in one
    transaction. Returns the rows now stored for that key (always 1)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    missing = {"symbol", "rate", "rate_at", "timestamp"} - set(record or {})
    if missing:
        raise ValueError(f"exchange-rate record lacks {sorted(missing)}: {record!r}")
    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        apply_ddl(conn, "exchange_rates")
        with transaction(conn), conn.cursor() as cur:
            cur.execute(read_sql("exchange_rates/upsert.sql"), record)
            cur.execute("SELECT count(*) FROM exchange_rates WHERE symbol = %(symbol)s AND rate_at = %(rate_at)s",
                        record)
            (count,) = cur.fetchone()
    finally:
        conn.close()
    return count
