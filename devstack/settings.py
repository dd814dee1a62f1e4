"""airflow_settings.yaml -> the connections, variables and pools of the local stack.

`astro dev start` applies airflow_settings.yaml as written (service names of the Astro Docker
network). Locally the same file is the source of truth; the only differences - hosts and ports of
the servers devstack started, their generated credentials instead of the file's example ones, and the
API stand-ins in offline mode - are applied here, in one place (`local_connections`). Both apply the
file on every start by the same rule (`apply_to_airflow`).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import yaml

# Connections devstack provides servers for.
WAREHOUSE_CONN_ID = "warehouse_db"
AWS_CONN_ID = "aws_default"
REDIS_CONN_ID = "redis_default"
# Buckets of the contract, created when the S3 server starts.
BUCKETS = ("airflow-xcom", "weather-data", "market-data", "lifedata", "nyc-tlc", "models")


@dataclass
class Settings:
    connections: dict[str, dict] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    pools: dict[str, dict] = field(default_factory=dict)


def load_settings(path: Path) -> Settings:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    airflow = raw.get("airflow") or {}
    settings = Settings()
    for conn in airflow.get("connections") or []:
        if not conn.get("conn_id"):
            continue
        settings.connections[conn["conn_id"]] = {
            "conn_type": conn.get("conn_type"),
            "host": conn.get("conn_host"),
            "schema": conn.get("conn_schema"),
            "login": conn.get("conn_login"),
            "password": conn.get("conn_password"),
            "port": conn.get("conn_port"),
            "extra": dict(conn.get("conn_extra") or {}),
        }
    for var in airflow.get("variables") or []:
        if var.get("variable_name"):
            value = var.get("variable_value")
            settings.variables[var["variable_name"]] = "" if value is None else str(value)
    for pool in airflow.get("pools") or []:
        if pool.get("pool_name"):
            settings.pools[pool["pool_name"]] = {
                "slots": int(pool.get("pool_slot") or 0),  # 0: skipped when applied, as the CLI does
                "description": pool.get("pool_description") or "",
            }
    return settings


def secret_variables(settings: Settings) -> list[str]:
    """Variables the file lists without a value: their values come from the environment
    (AIRFLOW_VAR_<NAME>, e.g. from the git-ignored .env.local) or from the UI, never from the file."""
    return [name for name, value in settings.variables.items() if not value]


def local_connections(settings: Settings, *, postgres_port: int, redis_port: int, s3_port: int,
                      standin_url: str | None, credentials) -> dict[str, dict]:
    """The settings' connections re-pointed at the local servers (and stand-ins when offline), with the
    local stack's generated credentials (devstack/credentials.py StackCredentials) in place of the
    file's example passwords and keys, which only the Astro/Docker path uses."""
    conns = {conn_id: {**conn, "extra": dict(conn["extra"])} for conn_id, conn in settings.connections.items()}
    if WAREHOUSE_CONN_ID in conns:
        conns[WAREHOUSE_CONN_ID].update(host="127.0.0.1", port=postgres_port, password=credentials.warehouse_db)
    if AWS_CONN_ID in conns:
        conns[AWS_CONN_ID].update(login=credentials.s3_access_key, password=credentials.s3_secret_key)
        conns[AWS_CONN_ID]["extra"]["endpoint_url"] = f"http://127.0.0.1:{s3_port}"
    if REDIS_CONN_ID in conns:
        conns[REDIS_CONN_ID].update(host="127.0.0.1", port=redis_port, password=credentials.redis)
    return point_apis_at(conns, standin_url) if standin_url else conns


def point_apis_at(conns: dict[str, dict], standin_url: str) -> dict[str, dict]:
    """Every third-party API connection (type http) re-pointed at the stand-ins; path templates in
    extras (nyc_tlc) stay, the stand-ins serve the same paths. APIs that share their paths with
    another one on a host of their own (Open-Meteo's previous-runs and live forecast APIs both serve
    `/v1/forecast`, as the historical-forecast API does) get the stand-in's address with a path prefix
    in `host` (devstack/standins/open_meteo.py CONNECTION_PATHS; include/http_api.base_url_from_connection
    takes a host that holds a whole URL as the base URL)."""
    from devstack.standins.open_meteo import CONNECTION_PATHS  # noqa: PLC0415

    scheme, _, hostport = standin_url.partition("://")
    host, _, port = hostport.partition(":")
    for conn_id, conn in conns.items():
        if conn["conn_type"] != "http":
            continue
        if conn_id in CONNECTION_PATHS:
            conn.update(host=f"{standin_url.rstrip('/')}{CONNECTION_PATHS[conn_id]}", port=None, schema=scheme)
        else:
            conn.update(host=host, port=int(port), schema=scheme)
    return conns


# `astro dev start --env .env.offline`: the stand-ins run as the compose service api-standins.
DOCKER_STANDIN_URL = "http://api-standins:8765"
OFFLINE_ENV_HEADER = """\
# `astro dev start --env .env.offline`: the Astro containers with every third-party API answered by
# the api-standins service of docker-compose.override.yml - no internet, no accounts needed.
# GENERATED from .env and airflow_settings.yaml by `make offline-env`; `make test` fails when it is
# out of date. Nothing secret: the stand-ins' own demo credentials.
"""


def docker_offline_env(settings: Settings, base_env_text: str, offline_values: dict[str, str]) -> str:
    """The text of .env.offline: .env, then the API connections (AIRFLOW_CONN_*, which take
    precedence over those airflow_settings.yaml seeds) and the stand-ins' credentials."""
    api_conns = {conn_id: {**conn, "extra": dict(conn["extra"])}
                 for conn_id, conn in settings.connections.items() if conn["conn_type"] == "http"}
    lines = [OFFLINE_ENV_HEADER, "# --- from .env", base_env_text.strip(), "",
             "# --- third-party APIs -> api-standins"]
    for conn_id, conn in sorted(point_apis_at(api_conns, DOCKER_STANDIN_URL).items()):
        lines.append("=".join(connection_env(conn_id, conn)))
    lines += ["", "# --- the stand-ins' demo credentials"]
    lines += [f"{key}={value}" for key, value in offline_values.items()]
    return "\n".join(lines) + "\n"


def connection_env(conn_id: str, conn: dict) -> tuple[str, str]:
    """AIRFLOW_CONN_<ID> in Airflow's JSON form (used by the tests, which run without the UI)."""
    payload = {key: value for key, value in conn.items() if value not in (None, "", {})}
    return f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(payload)


def variable_env(name: str, value: str) -> tuple[str, str]:
    return f"AIRFLOW_VAR_{name.upper()}", value


def s3_credentials(settings: Settings) -> tuple[str, str]:
    """The S3 keys of the settings file, or those it had before keys were generated (an S3 store made
    then keeps them: make run reuses them for it)."""
    conn = settings.connections.get(AWS_CONN_ID) or {}
    return conn.get("login") or "local-access-key", conn.get("password") or "local-secret-key"


def warehouse_database(settings: Settings) -> tuple[str, str, str]:
    """(database, role, password) that warehouse_db expects."""
    conn = settings.connections.get(WAREHOUSE_CONN_ID) or {}
    return conn.get("schema") or "warehouse", conn.get("login") or "warehouse", conn.get("password") or "warehouse"


def sqlalchemy_url(user: str, password: str, port: int, database: str) -> str:
    return f"postgresql+psycopg2://{quote(user)}:{quote(password)}@127.0.0.1:{port}/{database}"


def apply_to_airflow(connections: dict[str, dict], settings: Settings,
                     environ: dict[str, str] | None = None) -> list[str]:
    """Write connections, variables and pools into the Airflow metadata DB (run with Airflow's env).

    The rule `astro dev start` and `astro dev restart` follow (astro-cli settings/settings.go,
    ConfigSettings -> AddPools, AddVariables, AddConnections: POST each object, PATCH it when it
    exists), so that both paths behave alike on every start:
    - every connection, and every variable and pool the file gives a value, is written again: a pool
      size or such a variable changed in the UI goes back to the file's value;
    - a variable listed without a value is skipped (AddVariables skips empty values). That is how the
      secret variables are listed: their values come from AIRFLOW_VAR_<NAME> environment variables
      (the git-ignored .env.local) or from the UI, and no start ever overwrites them;
    - a pool without slots is skipped (AddPools).
    Connection hosts and ports are the local stack's (`local_connections`).
    """
    # The ORM models (not airflow.sdk's): this writes rows into the metadata DB.
    from airflow.models import Connection, Pool, Variable  # noqa: PLC0415
    from airflow.utils.session import create_session  # noqa: PLC0415

    environ = os.environ if environ is None else environ
    report = []
    with create_session() as session:
        for conn_id, conn in connections.items():
            existing = session.query(Connection).filter(Connection.conn_id == conn_id).one_or_none()
            target = existing or Connection(conn_id=conn_id)
            target.conn_type = conn["conn_type"]
            target.host = conn["host"]
            target.schema = conn["schema"]
            target.login = conn["login"]
            target.set_password(conn["password"])
            target.port = conn["port"]
            target.set_extra(json.dumps(conn["extra"]) if conn["extra"] else None)
            if existing is None:
                session.add(target)
            report.append(f"connection {conn_id}: {'updated' if existing else 'created'}")
        for name, value in settings.variables.items():
            existing = session.query(Variable).filter(Variable.key == name).one_or_none()
            if not value:
                report.append(f"variable {name}: {_secret_source(name, existing, environ)}")
            elif existing is None:
                session.add(Variable(key=name, val=value))
                report.append(f"variable {name}: created")
            else:
                existing.set_val(value)
                report.append(f"variable {name}: updated")
        for name, pool in settings.pools.items():
            if pool["slots"] <= 0:
                report.append(f"pool {name}: skipped (no pool_slot)")
                continue
            existing = session.query(Pool).filter(Pool.pool == name).one_or_none()
            if existing is None:
                session.add(Pool(pool=name, slots=pool["slots"], description=pool["description"],
                                 include_deferred=False))
            else:
                existing.slots, existing.include_deferred = pool["slots"], False
                if name != Pool.DEFAULT_POOL_NAME:  # the CLI updates only slots of default_pool
                    existing.description = pool["description"]
            report.append(f"pool {name}: {'updated' if existing else 'created'} ({pool['slots']} slots)")
    return report


def _secret_source(name: str, stored, environ) -> str:
    """Where a secret variable's value comes from, for the start-up report (never the value)."""
    env_key = variable_env(name, "")[0]
    if environ.get(env_key, "").strip():
        return f"from the environment ({env_key})"
    stored_value = (stored.val or "") if stored is not None else ""
    if stored_value.strip() and not stored_value.strip().upper().startswith("REPLACE_ME"):
        return "kept (the value stored in Airflow, e.g. set in the UI)"
    return f"NOT SET - put {env_key}=... in .env.local or set it in the UI (docs/configuration.md)"


def main(argv: list[str]) -> None:
    """`python -m devstack.settings <settings.yaml> <connections.json>` - used by `make run`."""
    settings = load_settings(Path(argv[0]))
    connections = json.loads(Path(argv[1]).read_text())
    for line in apply_to_airflow(connections, settings):
        print(f"  {line}")


if __name__ == "__main__":
    main(sys.argv[1:])
