"""Warehouse DDL under concurrency: every table's migrations may run from several tasks at once
(catch-up runs, several workers) on an empty warehouse, and must all succeed."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from include.warehouse import SQL_DIR

TABLES = sorted(path.name for path in SQL_DIR.iterdir() if path.is_dir() and list(path.glob("V*__*.sql")))


def _connect():
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id="warehouse_db").get_conn()


def test_every_warehouse_table_has_versioned_ddl():
    assert {"exchange_rates", "strava_activity", "strava_sync_state", "yellow_taxi_trips"} <= set(TABLES)


@pytest.mark.parametrize("table", TABLES)
def test_six_sessions_creating_a_table_at_once_all_succeed(stack, table):
    from include.warehouse import apply_ddl

    admin = _connect()
    admin.autocommit = True
    admin.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    sessions = [_connect() for _ in range(6)]
    barrier = threading.Barrier(len(sessions))

    def create(conn):
        barrier.wait()
        apply_ddl(conn, table)
        return True

    try:
        with ThreadPoolExecutor(len(sessions)) as pool:
            assert list(pool.map(create, sessions)) == [True] * len(sessions)
    finally:
        for conn in sessions:
            conn.close()
    assert admin.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone() == (True,)
    admin.close()
