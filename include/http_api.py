"""HTTP plumbing shared by the third-party API clients: base URLs from Airflow connections."""

from __future__ import annotations

from urllib.parse import urlsplit

# Every request has a deadline: a hung API must fail the task, not block a worker slot forever.
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 120


def base_url_from_connection(conn) -> str:
    """Base URL of an HTTP connection, however it was written.

    Accepts the UI/airflow_settings form (host `api.example.com`, schema `https`), the URI form
    (`AIRFLOW_CONN_X='http://127.0.0.1:8765'`: conn_type carries the scheme) and a host that
    already holds a scheme. Without any scheme, https.
    """
    host = (conn.host or "").strip().rstrip("/")
    if not host:
        raise ValueError(f"connection {conn.conn_id!r} has no host: set it to the API's base URL")
    if "://" in host:
        url = host
    else:
        if conn.schema in ("http", "https"):
            scheme = conn.schema
        elif conn.conn_type in ("http", "https"):
            scheme = conn.conn_type
        else:
            scheme = "https"
        url = f"{scheme}://{host}"
    if conn.port and urlsplit(url).port is None:
        url = f"{url}:{conn.port}"
    return url


def base_url(conn_id: str) -> str:
    """Base URL of the Airflow connection `conn_id` (so pointing the connection elsewhere
    redirects all of that API's traffic)."""
    from airflow.sdk import BaseHook  # noqa: PLC0415 - resolved at run time, not at parse time

    return base_url_from_connection(BaseHook.get_connection(conn_id))
