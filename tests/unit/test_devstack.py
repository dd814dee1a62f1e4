"""devstack: failures name the service, settings follow airflow_settings.yaml."""

import socket
import sys
from pathlib import Path

import pytest

from devstack import settings as airflow_settings
from devstack.credentials import load_or_create
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
            RedisService(tmp_path / "redis", tmp_path / "logs", port, password="unused").start()


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
    # Secrets are listed without a value: the Astro CLI skips such a variable on every start
    # (astro-cli settings/settings.go, AddVariables) and so does make run - never a value here.
    assert set(airflow_settings.secret_variables(settings)) == CONTRACT_VARIABLES
    assert settings.connections["open_meteo_archive"]["host"] == "archive-api.open-meteo.com"
    assert settings.connections["open_meteo_forecast"]["host"] == "historical-forecast-api.open-meteo.com"


def test_local_connections_repoint_services_and_offline_apis(tmp_path):
    settings = airflow_settings.load_settings(ROOT / "airflow_settings.yaml")
    creds = load_or_create(tmp_path)

    online = airflow_settings.local_connections(settings, postgres_port=1, redis_port=2, s3_port=3, standin_url=None,
                                                credentials=creds)
    offline = airflow_settings.local_connections(settings, postgres_port=1, redis_port=2, s3_port=3,
                                                 standin_url="http://127.0.0.1:4", credentials=creds)

    assert (online["warehouse_db"]["host"], online["warehouse_db"]["port"]) == ("127.0.0.1", 1)
    assert (online["redis_default"]["host"], online["redis_default"]["port"]) == ("127.0.0.1", 2)
    assert online["aws_default"]["extra"]["endpoint_url"] == "http://127.0.0.1:3"
    # The generated credentials: the file has none.
    assert online["warehouse_db"]["password"] == creds.warehouse_db
    assert online["redis_default"]["password"] == creds.redis
    assert (online["aws_default"]["login"], online["aws_default"]["password"]) == (creds.s3_access_key,
                                                                                  creds.s3_secret_key)
    assert settings.connections["aws_default"]["login"] is None
    assert online["twelvedata"]["host"] == "api.twelvedata.com"  # online: the real API
    for conn_id in ("open_meteo_archive", "open_meteo_forecast", "twelvedata", "strava", "nyc_tlc", "swapi"):
        assert (offline[conn_id]["schema"], offline[conn_id]["host"], offline[conn_id]["port"]) == \
            ("http", "127.0.0.1", 4)
    assert settings.connections["warehouse_db"]["host"] == "warehouse-db"  # the loaded settings stay as written


def _apply(stack, settings, environ=None):
    return airflow_settings.apply_to_airflow(stack.cfg.connections(), settings, environ=environ or {})


def test_every_start_reapplies_the_file_like_astro_dev_start(stack):
    """astro dev start/restart POST every object of the file and PATCH the ones that exist (astro-cli
    settings/settings.go, airflowAPIUpsert): make run does the same - UI edits of a pool or of a variable
    the file gives a value go back to the file's, connections follow the stack."""
    from airflow.models import Connection, Pool, Variable
    from airflow.utils.session import create_session

    settings = airflow_settings.load_settings(ROOT / "airflow_settings.yaml")
    settings.variables["CHECK_DAG_DIR"] = "/tmp/check_dag_from_file"  # a non-secret variable with a value
    _apply(stack, settings)
    with create_session() as session:
        session.query(Pool).filter(Pool.pool == "twelvedata_api").one().slots = 5
        session.query(Variable).filter(Variable.key == "CHECK_DAG_DIR").one().set_val("/tmp/edited-in-the-ui")

    report = _apply(stack, settings)

    with create_session() as session:
        assert session.query(Pool).filter(Pool.pool == "twelvedata_api").one().slots == 1
        assert session.query(Variable).filter(Variable.key == "CHECK_DAG_DIR").one().val == "/tmp/check_dag_from_file"
        stored = session.query(Connection).filter(Connection.conn_id == "warehouse_db").one()
        assert (stored.host, stored.port, stored.password) == ("127.0.0.1", stack.cfg.postgres_port,
                                                               stack.cfg.credentials.warehouse_db)
        session.query(Variable).filter(Variable.key == "CHECK_DAG_DIR").delete()
    assert "connection warehouse_db: updated" in report
    assert "pool twelvedata_api: updated (1 slots)" in report
    assert "variable CHECK_DAG_DIR: updated" in report


def test_secret_variables_are_never_written_so_real_values_survive_restarts(stack):
    """The secrets have no value in the file: no start writes them, on either path. A value set in the UI
    survives, one from AIRFLOW_VAR_<NAME> (.env.local) wins over it, and the report says where each comes
    from - never the value itself."""
    from airflow.models import Variable
    from airflow.utils.session import create_session

    settings = airflow_settings.load_settings(ROOT / "airflow_settings.yaml")
    with create_session() as session:
        session.query(Variable).filter(Variable.key.in_(CONTRACT_VARIABLES)).delete()

    first = _apply(stack, settings)
    with create_session() as session:
        assert session.query(Variable).filter(Variable.key.in_(CONTRACT_VARIABLES)).count() == 0
        session.add(Variable(key="STRAVA_CLIENT", val="a-client-id-typed-in-the-ui"))
    report = _apply(stack, settings, environ={"AIRFLOW_VAR_TWELVEDATA_API_KEY": "a-real-key-from-env-local"})

    with create_session() as session:
        strava_client = session.query(Variable).filter(Variable.key == "STRAVA_CLIENT").one()
        assert strava_client.val == "a-client-id-typed-in-the-ui"
        assert session.query(Variable).filter(Variable.key == "TWELVEDATA_API_KEY").one_or_none() is None
        session.query(Variable).filter(Variable.key == "STRAVA_CLIENT").delete()
    assert "variable TWELVEDATA_API_KEY: NOT SET - put AIRFLOW_VAR_TWELVEDATA_API_KEY=... in .env.local " \
        "or set it in the UI (docs/configuration.md)" in first
    assert "variable TWELVEDATA_API_KEY: from the environment (AIRFLOW_VAR_TWELVEDATA_API_KEY)" in report
    assert "variable STRAVA_CLIENT: kept (the value stored in Airflow, e.g. set in the UI)" in report
    assert "variable STRAVA_CLIENT_SECRET: NOT SET" in " ".join(report)
    assert not any("a-real-key" in line or "typed-in-the-ui" in line for line in report)


def test_a_pool_without_slots_is_skipped_as_the_cli_does(tmp_path):
    settings_file = tmp_path / "airflow_settings.yaml"
    settings_file.write_text("airflow:\n  pools:\n    - pool_name: no_slots\n      pool_slot:\n")

    assert airflow_settings.load_settings(settings_file).pools["no_slots"]["slots"] == 0  # AddPools: "Skipping"


def test_airflow_s_other_listeners_are_the_stack_s_ports_and_checked(monkeypatch, tmp_path):
    """The scheduler's health check and the two log servers used Airflow's fixed defaults (8974,
    8793, 8794) unchecked: a second stack collided silently. They are settings, and the components
    that open them refuse to start on a busy port."""
    from devstack.stack import StackConfig, airflow_components, airflow_env

    monkeypatch.setenv("DEVSTACK_STATE_DIR", str(tmp_path))
    for name, port in (("SCHEDULER_HEALTH", "19074"), ("WORKER_LOG", "19093"), ("TRIGGER_LOG", "19094")):
        monkeypatch.setenv(f"DEVSTACK_{name}_PORT", port)
    cfg = StackConfig.for_run(offline=True)
    env = airflow_env(cfg, base={})

    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] == "19074"
    assert (env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"], env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"]) == \
        ("19093", "19094")
    components = {component.name: component for component in airflow_components(cfg, env)}
    assert components["airflow-scheduler"].ports == [19074]
    # Airflow's own log servers bind every interface: ours (devstack.log_server) serves both on loopback.
    assert components["airflow-log-server"].ports == [19093, 19094]
    assert "--skip-serve-logs" in components["airflow-scheduler"].command()
    assert "--skip-serve-logs" in components["airflow-triggerer"].command()


def test_celery_mode_adds_workers_of_their_own_and_flower(monkeypatch, tmp_path):
    """make run EXECUTOR=celery WORKERS=2: Valkey broker (its own database), metadata-DB result backend,
    flower behind a login, and per worker an address, folder and log server of its own; worker-1
    alone serves the venv and local-files queues."""
    from devstack.stack import StackConfig, airflow_components, airflow_env

    monkeypatch.setenv("DEVSTACK_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("DEVSTACK_EXECUTOR", "celery")
    monkeypatch.setenv("DEVSTACK_WORKERS", "2")
    cfg = StackConfig.for_run(offline=True)
    env = airflow_env(cfg, base={})

    assert env["AIRFLOW__CORE__EXECUTOR"] == "airflow.providers.celery.executors.celery_executor.CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:")
    assert env["AIRFLOW__CELERY__BROKER_URL"].endswith(f"@127.0.0.1:{cfg.redis_port}/1")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://airflow:")
    assert env["AIRFLOW__CELERY__FLOWER_BASIC_AUTH"] == f"admin:{cfg.credentials.ui_admin}"
    components = {c.name: c for c in airflow_components(cfg, env)}
    workers = {name: c for name, c in components.items() if name.startswith("airflow-worker-")}
    assert set(workers) == {"airflow-worker-1", "airflow-worker-1-logs", "airflow-worker-2", "airflow-worker-2-logs"}
    assert "airflow-flower" in components
    first, second = workers["airflow-worker-1"], workers["airflow-worker-2"]
    assert first.env()["DEVSTACK_HOSTNAME"] == "127.0.0.2" and second.env()["DEVSTACK_HOSTNAME"] == "127.0.0.3"
    assert first.data_dir != second.data_dir and first.env()["TMPDIR"] != second.env()["TMPDIR"]
    assert first.command()[first.command().index("--queues") + 1] == "default,venv,local-files"
    assert second.command()[second.command().index("--queues") + 1] == "default"
    assert workers["airflow-worker-2-logs"].host == "127.0.0.3"
    assert workers["airflow-worker-2-logs"].ports == [cfg.worker_log_port]


def test_task_slots_are_sized_for_the_machine_unless_set(monkeypatch, tmp_path):
    """Airflow's 32 LocalExecutor processes (~135 MB each) are for a server; .env(.local) still wins."""
    import os

    from devstack.stack import StackConfig, airflow_env, default_slots

    monkeypatch.setenv("DEVSTACK_STATE_DIR", str(tmp_path))
    cfg = StackConfig.for_run(offline=True)

    assert airflow_env(cfg, base={})["AIRFLOW__CORE__PARALLELISM"] == str(max(4, 4 * os.cpu_count()))
    assert default_slots() < 32 or os.cpu_count() >= 8
    assert airflow_env(cfg, base={"AIRFLOW__CORE__PARALLELISM": "16"})["AIRFLOW__CORE__PARALLELISM"] == "16"


@pytest.mark.parametrize("variable, value, message", [("DEVSTACK_EXECUTOR", "kubernetes", "EXECUTOR='kubernetes'"),
                                                      ("DEVSTACK_WORKERS", "0", "WORKERS='0'")])
def test_a_wrong_executor_setting_is_named(monkeypatch, tmp_path, variable, value, message):
    from devstack.stack import StackConfig

    monkeypatch.setenv("DEVSTACK_STATE_DIR", str(tmp_path))
    monkeypatch.setenv(variable, value)
    with pytest.raises(ServiceError, match=message):
        StackConfig.for_run(offline=True)


def test_a_stacks_ports_are_distinct_and_outside_its_s3_block(monkeypatch):
    """free_port() checks only that nothing listens now: a port handed out twice, or one inside the S3
    block that S3 has not bound yet (a LiveStack's Redis took 16043 that way, then S3 failed), must be skipped."""
    from devstack import services

    handed_out = iter([16043, 16043, 16040, 17000, 17000, 26052, 17001])
    monkeypatch.setattr(services, "free_port", lambda: next(handed_out))
    assert services.s3_block_ports(16040) == [*range(16040, 16052), 26050]
    assert services.distinct_free_ports(2, taken=set(services.s3_block_ports(16040))) == [17000, 26052]
