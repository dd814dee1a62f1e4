"""devstack: failures name the service, settings follow airflow_settings.yaml."""

import socket
import sys
from pathlib import Path

import pytest

from devstack import settings as airflow_settings
from devstack.services import CommandService, RedisService, ServiceError, free_port

# devstack is the Docker-free stack: its server wheels are not in the Astro image.
pytestmark = pytest.mark.make_test

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_CONNECTIONS = {"warehouse_db", "aws_default", "redis_default", "open_meteo_archive", "open_meteo_forecast",
                        "twelvedata", "strava", "nyc_tlc", "swapi"}
CONTRACT_VARIABLES = {"TWELVEDATA_API_KEY", "STRAVA_CLIENT", "STRAVA_CLIENT_SECRET"}


def test_busy_port_is_an_error_naming_the_service(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServiceError, match=rf"redis: port\(s\) {port} on 127.0.0.1 already in use"):
            RedisService(tmp_path / "redis", tmp_path / "logs", port).start()


def test_crashing_service_reports_its_exit_and_log(tmp_path):
    service = CommandService("crashy", [sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"],
                             tmp_path, tmp_path / "logs", [free_port()], env={}, ready=lambda: False)
    with pytest.raises(ServiceError, match=r"(?s)crashy exited with code 3 while starting.*boom: bad config"):
        service.start()


def test_hanging_service_times_out_instead_of_hanging(tmp_path):
    service = CommandService("sleepy", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path,
                             tmp_path / "logs", [free_port()], env={}, ready=lambda: False, start_timeout=1)
    with pytest.raises(ServiceError, match="sleepy did not become ready within 1s"):
        service.start()
    assert not service.running()


def test_settings_file_seeds_every_contract_name():
    settings = airflow_settings.load_settings(ROOT / "airflow_settings.yaml")

    assert set(settings.connections) >= CONTRACT_CONNECTIONS
    assert set(settings.variables) >= CONTRACT_VARIABLES
    for name in CONTRACT_VARIABLES:  # placeholders, never real secrets
        assert settings.variables[name].startswith("REPLACE_ME")
    assert settings.connections["open_meteo_archive"]["host"] == "archive-api.open-meteo.com"
    assert settings.connections["open_meteo_forecast"]["host"] == "historical-forecast-api.open-meteo.com"


def test_local_connections_repoint_services_and_offline_apis():
    settings = airflow_settings.load_settings(ROOT / "airflow_settings.yaml")

    online = airflow_settings.local_connections(settings, postgres_port=1, redis_port=2, s3_port=3, standin_url=None)
    offline = airflow_settings.local_connections(settings, postgres_port=1, redis_port=2, s3_port=3,
                                                 standin_url="http://127.0.0.1:4")

    assert (online["warehouse_db"]["host"], online["warehouse_db"]["port"]) == ("127.0.0.1", 1)
    assert (online["redis_default"]["host"], online["redis_default"]["port"]) == ("127.0.0.1", 2)
    assert online["aws_default"]["extra"]["endpoint_url"] == "http://127.0.0.1:3"
    assert online["twelvedata"]["host"] == "api.twelvedata.com"  # online: the real API
    for conn_id in ("open_meteo_archive", "open_meteo_forecast", "twelvedata", "strava", "nyc_tlc", "swapi"):
        assert (offline[conn_id]["schema"], offline[conn_id]["host"], offline[conn_id]["port"]) == \
            ("http", "127.0.0.1", 4)
    assert settings.connections["warehouse_db"]["host"] == "warehouse-db"  # the loaded settings stay as written


def test_applying_settings_creates_but_never_overwrites_variables(stack):
    from airflow.models import Connection, Variable
    from airflow.utils.session import create_session

    settings = airflow_settings.load_settings(ROOT / "airflow_settings.yaml")
    conns = stack.cfg.connections()
    airflow_settings.apply_to_airflow(conns, settings)
    with create_session() as session:
        row = session.query(Variable).filter(Variable.key == "TWELVEDATA_API_KEY").one()
        row.set_val("a-real-key-set-in-the-ui")

    report = airflow_settings.apply_to_airflow(conns, settings)

    with create_session() as session:
        assert session.query(Variable).filter(Variable.key == "TWELVEDATA_API_KEY").one().val == \
            "a-real-key-set-in-the-ui"
        stored = session.query(Connection).filter(Connection.conn_id == "warehouse_db").one()
        assert (stored.host, stored.port, stored.password) == ("127.0.0.1", stack.cfg.postgres_port, "warehouse")
    assert "connection warehouse_db: updated" in report
    assert not any(line.startswith("variable") for line in report)
