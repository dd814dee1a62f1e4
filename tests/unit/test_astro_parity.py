"""The Astro path's files agree with the Docker-free path's: docker-compose.override.yml serves what
airflow_settings.yaml connects to, .env.offline is generated from the same sources, `--env .env.local`
keeps .env's settings, no committed file holds a secret, the stand-ins run on a bare Python image, and
the CI workflow tests PRs and deploys main (astronomer/deploy-action v0.13.0) with secrets only.

No Docker engine here: these read the files. The linters (hadolint, compose and workflow schemas)
run in `make lint`."""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from urllib.parse import urlsplit

import pytest
import yaml

from devstack import settings as airflow_settings
from devstack.stack import OFFLINE_VALUES, ROOT, StackConfig, offline_env_text

# These files stay out of the Astro image (.dockerignore): `astro dev pytest` deselects this module.
pytestmark = pytest.mark.make_test

# astronomer/deploy-action v0.13.0 (commit 7a5226229901e89cadc12d8e208922d133e1f12c), its action.yaml inputs.
DEPLOY_ACTION_VERSION = "v0.13.0"
DEPLOY_ACTION_INPUTS = {
    "root-folder", "parse", "pytest", "pytest-file", "force", "image-name", "action", "deployment-name",
    "deployment-id", "workspace", "preview-name", "copy-connections", "copy-airflow-variables", "copy-pools",
    "cli-version", "checkout", "description", "deploy-image", "deploy-type", "build-secrets", "mount-path",
    "checkout-submodules", "wake-on-deploy", "wait-time",
}
AIRFLOW_SERVICES = ("scheduler", "dag-processor", "triggerer", "api-server")  # those the CLI gives --env's file


@cache
def _yaml(relative: str):
    return yaml.safe_load((ROOT / relative).read_text())


def _services() -> dict:
    return _yaml("docker-compose.override.yml")["services"]


@cache
def _settings():
    return airflow_settings.load_settings(ROOT / "airflow_settings.yaml")


def _conns() -> dict:
    return _settings().connections


def _container_port(service: str) -> int:
    return int(_services()[service]["ports"][0].rsplit(":", 1)[1])


def _host_port(service: str) -> int:
    return int(_services()[service]["ports"][0].split(":")[-2])


def _command_flag(service: str, flag: str) -> str:
    return next(arg.split("=", 1)[1] for arg in _services()[service]["command"] if arg.startswith(f"-{flag}="))


def test_every_connected_service_is_a_compose_service_on_astros_network():
    s3_endpoint = urlsplit(_conns()["aws_default"]["extra"]["endpoint_url"])
    hosts = {_conns()["warehouse_db"]["host"], _conns()["redis_default"]["host"], s3_endpoint.hostname}

    assert hosts == {"warehouse-db", "redis", "s3"}
    assert hosts <= set(_services())
    for name in (*hosts, "api-standins"):
        assert _services()[name]["networks"] == ["airflow"], name  # the network of Astro's containers
    assert "airflow" in _yaml("docker-compose.override.yml")["networks"]


def test_compose_ports_are_the_ones_the_connections_use():
    assert _container_port("warehouse-db") == _conns()["warehouse_db"]["port"] == 5432
    assert _container_port("redis") == _conns()["redis_default"]["port"] == 6379
    s3_port = urlsplit(_conns()["aws_default"]["extra"]["endpoint_url"]).port
    assert _container_port("s3") == int(_command_flag("s3", "s3.port")) == s3_port
    assert f"http://api-standins:{_container_port('api-standins')}" == airflow_settings.DOCKER_STANDIN_URL


def test_host_ports_match_make_run_so_the_readme_commands_work_for_both():
    cfg = StackConfig.for_run(offline=False)

    assert _host_port("warehouse-db") == cfg.postgres_port
    assert _host_port("redis") == cfg.redis_port
    assert _host_port("s3") == cfg.s3_port
    assert _host_port("api-standins") == cfg.standin_port
    for service in ("warehouse-db", "redis", "s3", "api-standins"):
        assert _services()[service]["ports"][0].startswith("127.0.0.1:"), "published on loopback only"


def test_compose_database_and_buckets_are_those_of_the_settings():
    # The credentials are generated (make docker-env): tests/e2e/test_docker_credentials.py.
    database, role, _ = airflow_settings.warehouse_database(_settings())
    environment = _services()["warehouse-db"]["environment"]
    assert (environment["POSTGRES_DB"], environment["POSTGRES_USER"]) == (database, role)
    assert _command_flag("s3", "bucket").split(",") == list(airflow_settings.BUCKETS)


def test_airflow_waits_for_the_pipeline_services():
    for component in ("scheduler", "dag-processor", "triggerer", "api-server"):
        depends = _services()[component]["depends_on"]
        assert depends["warehouse-db"]["condition"] == depends["redis"]["condition"] == "service_healthy"
        assert {"s3", "api-standins"} <= set(depends)
    assert "healthcheck" in _services()["warehouse-db"] and "healthcheck" in _services()["redis"]


# Third-party packages a stand-in may import inside a function, for one path that needs them (the TLC
# publisher's parquet files): api-standins' image installs them, at the versions the venv has.
OPTIONAL_STANDIN_IMPORTS = {"tlc_publisher.py": {"pyarrow", "numpy"}}


def test_the_standins_need_nothing_but_the_standard_library():
    """api-standins runs them on a bare python image: no third-party import may creep in (but the optional
    ones above, inside functions)."""
    allowed = set(sys.stdlib_module_names) | {"devstack"}
    service = _services()["api-standins"]
    dockerfile = service["build"]["dockerfile_inline"].splitlines()
    assert dockerfile[0] == "FROM python:3.12-slim"
    lock = (ROOT / "requirements-dev.lock").read_text()
    for package in sorted(set().union(*OPTIONAL_STANDIN_IMPORTS.values())):
        pin = re.search(rf"^{package}==(\S+)(?: ; python_full_version >= '3.12')?$", lock, re.MULTILINE).group(1)
        assert f"{package}=={pin}" in dockerfile[1], f"api-standins must install {package}=={pin}, as the venv has"
    assert service["command"][:3] == ["python", "-m", "devstack.standins"]
    for path in [ROOT / "devstack/__init__.py", *sorted((ROOT / "devstack/standins").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        in_functions = {id(node) for function in ast.walk(tree)
                        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef) for node in ast.walk(function)}
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            optional = OPTIONAL_STANDIN_IMPORTS.get(path.name, set()) if id(node) in in_functions else set()
            for name in names:
                assert name.split(".")[0] in allowed | optional, f"{path.name} imports {name}"


def test_env_offline_is_generated_from_env_and_the_settings():
    committed = (ROOT / ".env.offline").read_text()

    assert committed == offline_env_text(), ".env.offline is out of date: run `make offline-env` and commit it"


def test_env_offline_points_every_api_at_the_standins_and_keeps_env():
    lines = dict(line.split("=", 1) for line in (ROOT / ".env.offline").read_text().splitlines()
                 if line and not line.startswith("#"))
    base = dict(line.split("=", 1) for line in (ROOT / ".env").read_text().splitlines()
                if line and not line.startswith("#"))

    assert base.items() <= lines.items()  # `--env .env.offline` replaces .env, so it carries .env along
    api_ids = {conn_id for conn_id, conn in _conns().items() if conn["conn_type"] == "http"}
    assert {key for key in lines if key.startswith("AIRFLOW_CONN_")} == {f"AIRFLOW_CONN_{i.upper()}" for i in api_ids}
    from types import SimpleNamespace

    from devstack.standins.open_meteo import CONNECTION_PATHS
    from include.http_api import base_url_from_connection

    for conn_id in api_ids:
        conn = yaml.safe_load(lines[f"AIRFLOW_CONN_{conn_id.upper()}"])
        # APIs sharing their paths with another (Open-Meteo's three /v1/forecast hosts) get a path prefix.
        url = base_url_from_connection(SimpleNamespace(conn_id=conn_id, **{"port": None, **conn}))
        assert url == f"http://api-standins:8765{CONNECTION_PATHS.get(conn_id, '')}", conn_id
    assert OFFLINE_VALUES.items() <= lines.items()
    assert lines["OAUTH_PLAIN_HTTP_HOSTS"] == "api-standins"


def test_workflow_runs_make_test_on_pull_requests_and_before_deploying():
    triggers = _yaml(".github/workflows/ci.yml")[True]  # YAML 1.1 reads the key `on` as boolean True
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    test_steps = _yaml(".github/workflows/ci.yml")["jobs"]["test"]["steps"]
    assert any(step.get("run", "").startswith("make test") for step in test_steps)


def test_workflow_deploys_main_with_astronomers_action_and_secrets_from_the_store():
    deploy = _yaml(".github/workflows/ci.yml")["jobs"]["deploy"]
    assert deploy["needs"] == "test"
    assert "refs/heads/main" in deploy["if"] and "push" in deploy["if"]
    assert deploy["env"]["ASTRO_API_TOKEN"] == "${{ secrets.ASTRO_API_TOKEN }}"
    action = next(step for step in deploy["steps"] if step.get("uses", "").startswith("astronomer/deploy-action@"))
    assert action["with"]["deployment-id"] == "${{ vars.ASTRO_DEPLOYMENT_ID }}"
    assert action["uses"] == f"astronomer/deploy-action@{DEPLOY_ACTION_VERSION}"
    assert set(action["with"]) <= DEPLOY_ACTION_INPUTS, set(action["with"]) - DEPLOY_ACTION_INPUTS
    text = (ROOT / ".github/workflows/ci.yml").read_text()
    assert "ASTRO_API_TOKEN:" in text and text.count("secrets.") == 1  # the token, from the secret store only


@pytest.mark.parametrize("ignored", [".env", ".env.local", ".env.offline"])
def test_env_files_stay_out_of_the_image(ignored):
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored in patterns or (ignored.startswith(".env.") and ".env.*" in patterns)


def test_the_standins_serve_from_a_bare_interpreter():
    """`python -S`: no site-packages at all, as on the python:3.12-slim image of api-standins."""
    import json
    import subprocess
    import time
    import urllib.request

    from devstack.services import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-S", "-m", "devstack.standins", "--host", "127.0.0.1", "--port",
                               str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_standin/health", timeout=2) as resp:
                    health = json.load(resp)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the stand-ins did not answer within 20 s"
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/people/1/", timeout=5) as resp:
            person = json.load(resp)
    finally:
        server.terminate()
        server.wait(timeout=10)

    assert health["status"] == "ok"
    assert person["name"] == "Luke Skywalker"


def test_production_env_holds_the_real_api_connections_and_no_secret():
    text = (ROOT / "deploy/production.env").read_text()
    lines = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))

    for conn_id, conn in _conns().items():
        if conn["conn_type"] == "http":
            key, value = airflow_settings.connection_env(conn_id, conn)
            assert yaml.safe_load(lines[key]) == yaml.safe_load(value), conn_id
            assert yaml.safe_load(value)["schema"] == "https", conn_id  # real APIs, over TLS
    for key, value in lines.items():
        assert not any(word in key for word in ("KEY", "SECRET", "PASSWORD", "TOKEN")), key
        assert "password" not in value and "REPLACE_ME" not in value, key


def test_astro_dev_start_with_env_local_keeps_the_settings_of_env():
    """The CLI gives its four Airflow services the one file of `--env` (astro-cli airflow/container.go,
    generateConfig; composeyml.go.tmpl); the override appends .env to it (compose appends env_file
    lists), so `astro dev start --env .env.local` reads .env and then the secrets, like make run - and
    last the generated connections of the local servers (make docker-env)."""
    for service in AIRFLOW_SERVICES:
        assert _services()[service]["env_file"] == [".env", ".local/docker/airflow.env"], service


def test_no_secret_is_committed_in_the_files_the_cli_applies_or_exports_to():
    """airflow_settings.yaml and .env are committed here (Astro's own template git-ignores both) and are
    where `astro dev object export` writes by default: neither may hold a secret value."""
    for name in airflow_settings.secret_variables(_settings()):
        assert _settings().variables[name] == "", name
    assert set(airflow_settings.secret_variables(_settings())) == {
        "TWELVEDATA_API_KEY", "STRAVA_CLIENT", "STRAVA_CLIENT_SECRET"}
    env_keys = [line.split("=", 1)[0] for line in (ROOT / ".env").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert env_keys and all(key.startswith("AIRFLOW__") for key in env_keys), env_keys  # settings only
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env.local" in ignored and "airflow_settings.local.yaml" in ignored
