"""warehouse_db (the storage Postgres pipelines load into): versioned DDL and loads.

DDL lives in include/sql/<table>/V<n>__*.sql and is applied in version order, idempotently,
in the same transaction as the load that needs it.
"""

from __future__ import annotations

import re
from pathlib import Path

WAREHOUSE_CONN_ID = "warehouse_db"
SQL_DIR = Path(__file__).parent / "sql"


def read_sql(relative: str) -> str:
    return (SQL_DIR / relative).read_text()


def migrations(table: str) -> list[str]:
    """The table's DDL files in version order (V1__, V2__, ...)."""
    files = sorted((SQL_DIR / table).glob("V*__*.sql"), key=lambda p: int(re.match(r"V(\d+)__", p.name).group(1)))
    return [path.read_text() for path in files]


def upsert_exchange_rate(record: dict, conn_id: str = WAREHOUSE_CONN_ID) -> int:
    """Create exchange_rates if needed and upsert the record on (symbol, rate_at), in one
    transaction. Returns the rows now stored for that key (always 1)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415

    missing = {"symbol", "rate", "rate_at", "timestamp"} - set(record or {})
    if missing:
        raise ValueError(f"exchange-rate record lacks {sorted(missing)}: {record!r}")
    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        # One transaction: committed on success, rolled back on error (psycopg 3 and psycopg2 alike).
        with conn, conn.cursor() as cur:
            for ddl in migrations("exchange_rates"):
                cur.execute(ddl)
            cur.execute(read_sql("exchange_rates/upsert.sql"), record)
            cur.execute("SELECT count(*) FROM exchange_rates WHERE symbol = %(symbol)s AND rate_at = %(rate_at)s",
                        record)
            (count,) = cur.fetchone()
    finally:
        conn.close()
    return count
