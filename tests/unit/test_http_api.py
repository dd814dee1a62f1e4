"""Base URLs come from the connection, in every form users write them."""

import json
import urllib.request

import pytest
from airflow.sdk import Connection

from include.http_api import base_url_from_connection
from include.open_meteo import fetch_hourly_temperatures


@pytest.mark.parametrize(
    ("conn", "expected"),
    [
        (Connection(conn_id="a", conn_type="http", host="archive-api.open-meteo.com", schema="https"),
         "https://archive-api.open-meteo.com"),
        (Connection.from_uri("http://127.0.0.1:8765", conn_id="a"), "http://127.0.0.1:8765"),
        (Connection.from_uri("https://api.twelvedata.com", conn_id="a"), "https://api.twelvedata.com"),
        (Connection(conn_id="a", conn_type="http", host="https://www.strava.com/"), "https://www.strava.com"),
        (Connection(conn_id="a", conn_type="http", host="localhost", port=9000, schema="http"),
         "http://localhost:9000"),
        (Connection(conn_id="a", conn_type="generic", host="swapi.dev"), "https://swapi.dev"),
    ],
)
def test_base_url_from_each_connection_form(conn, expected):
    assert base_url_from_connection(conn) == expected


def test_connection_without_host_is_a_clear_error():
    with pytest.raises(ValueError, match="connection 'x' has no host"):
        base_url_from_connection(Connection(conn_id="x", conn_type="http"))


def test_pointing_the_connection_elsewhere_redirects_the_traffic(standin, monkeypatch):
    """AIRFLOW_CONN_OPEN_METEO_ARCHIVE in URI form, as outside checks and users set it."""
    monkeypatch.setenv("AIRFLOW_CONN_OPEN_METEO_ARCHIVE", standin.standin_url)
    urllib.request.urlopen(urllib.request.Request(f"{standin.standin_url}/_standin/requests", method="DELETE"))

    fetch_hourly_temperatures(40.7, -74.0, "2025-01-01", "2025-01-01")

    with urllib.request.urlopen(f"{standin.standin_url}/_standin/requests", timeout=5) as resp:
        assert [r["path"] for r in json.load(resp)["requests"]] == ["/v1/archive"]
