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


EXCHANGE_RATES_STAGED = "exchange_rates_staged"


def stage_exchange_rate(record: dict, run_id: str | None = None, conn_id: str = WAREHOUSE_CONN_ID) -> dict:
    """Create exchange_rates (and its stage) if needed, then put the record into
    exchange_rates_staged, keyed (symbol, rate_at) - readers of exchange_rates see nothing yet; the
    checks run on the staged row and publish_exchange_rate moves it. Returns where it is staged."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    missing = {"symbol", "rate", "rate_at", "timestamp"} - set(record or {})
    if missing:
        raise ValueError(f"exchange-rate record lacks {sorted(missing)}: {record!r}")
    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        apply_ddl(conn, "exchange_rates")
        with transaction(conn), conn.cursor() as cur:
            cur.execute(read_sql("exchange_rates/stage.sql"), {**record, "run_id": run_id})
    finally:
        conn.close()
    return {"staged_table": EXCHANGE_RATES_STAGED, "symbol": record["symbol"], "rate_at": record["rate_at"]}


def publish_exchange_rate(symbol: str, rate_at: str, conn_id: str = WAREHOUSE_CONN_ID) -> int:
    """Move the checked row (symbol, rate_at) from the stage into exchange_rates in one transaction
    (an upsert: a re-run rewrites its row). Returns the rows published (1), or fails when nothing
    is staged for that key - publish without its load."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        with transaction(conn), conn.cursor() as cur:
            cur.execute(read_sql("exchange_rates/publish.sql"), {"symbol": symbol, "rate_at": rate_at})
            published = cur.rowcount
            if published != 1:
                raise RuntimeError(f"nothing staged in {EXCHANGE_RATES_STAGED} for {symbol} at {rate_at}: "
                                   "run load_exchange_rate first")
    finally:
        conn.close()
    return published
