"""The whole local stack: which servers, on which ports, with which Airflow settings.

Used two ways:
- `make run` (run_forever): fixed ports, state kept under `.local/` so a restart resumes,
  Airflow's api-server, scheduler, dag-processor and triggerer on top, Ctrl-C stops everything.
- `make test` (tests/conftest.py): throwaway state in a temp dir and free ports, so tests run
  beside a `make run` and twice in a row.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import quote

from devstack import credentials as stack_credentials
from devstack import settings as airflow_settings
from devstack.services import (
    CommandService,
    PostgresService,
    RedisService,
    S3Service,
    Service,
    ServiceError,
    distinct_free_ports,
    ephemeral_port_range,
    http_ok,
    port_in_use,
)
from devstack.supervisor import Supervisor

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_DB = ("airflow", "airflow")  # metadata database and its role; the password is generated
UI_USER = "admin"  # its password is generated (devstack/credentials.py)
STANDIN_TWELVEDATA_KEY = "offline-standin-key"
STANDIN_STRAVA_CLIENT = ("offline-client", "offline-client-secret")  # the stand-in's OAuth app
# What OFFLINE=1 (and .env.offline) sets: the stand-ins accept these; a real key from .env.local is
# not sent to them.
OFFLINE_VALUES = {"AIRFLOW_VAR_TWELVEDATA_API_KEY": STANDIN_TWELVEDATA_KEY,
                  "TWELVEDATA_API_KEY": STANDIN_TWELVEDATA_KEY,
                  "AIRFLOW_VAR_STRAVA_CLIENT": STANDIN_STRAVA_CLIENT[0],
                  "AIRFLOW_VAR_STRAVA_CLIENT_SECRET": STANDIN_STRAVA_CLIENT[1]}


@dataclass
class StackConfig:
    state_dir: Path
    postgres_port: int
    redis_port: int
    s3_port: int
    s3_internal_ports: list[int]
    standin_port: int
    api_port: int
    offline: bool = False
    durable: bool = True  # fsync and Redis persistence; off for throwaway test servers
    # Airflow's own listeners besides the API: the scheduler's health check, and the log servers
    # the scheduler and the triggerer start (the UI fetches a running task's log from them).
    scheduler_health_port: int = 8974
    worker_log_port: int = 8793
    trigger_log_port: int = 8794
    # LocalExecutor (as `astro dev start`), or CeleryExecutor with `workers` workers (as Astro runs
    # tasks) and flower on flower_port.
    executor: str = "local"
    workers: int = 2
    flower_port: int = 5555
    root: Path = ROOT
    settings_file: Path = field(default_factory=lambda: ROOT / "airflow_settings.yaml")

    @classmethod
    def for_run(cls, offline: bool) -> StackConfig:
        """Fixed ports (override with DEVSTACK_*_PORT) so bookmarks and clients keep working."""

        def port(name: str, default: int) -> int:
            return int(os.environ.get(f"DEVSTACK_{name}_PORT", default))

        s3 = port("S3", 18333)
        return cls(
            state_dir=Path(os.environ.get("DEVSTACK_STATE_DIR", ROOT / ".local")).resolve(),
            postgres_port=port("POSTGRES", 15432),
            redis_port=port("REDIS", 16379),
            s3_port=s3,
            s3_internal_ports=list(range(s3 + 1, s3 + 12)),
            standin_port=port("STANDIN", 18765),
            api_port=port("API", 8080),
            offline=offline,
            scheduler_health_port=port("SCHEDULER_HEALTH", 8974),
            worker_log_port=port("WORKER_LOG", 8793),
            trigger_log_port=port("TRIGGER_LOG", 8794),
            executor=executor_mode(os.environ.get("DEVSTACK_EXECUTOR") or "local"),
            workers=worker_count(os.environ.get("DEVSTACK_WORKERS") or "2"),
            flower_port=port("FLOWER", 5555),
        )

    @classmethod
    def for_tests(cls, state_dir: Path) -> StackConfig:
        # Distinct ports: free_port() alone may hand out one twice (nothing holds it in between).
        s3_internal = _internal_s3_ports()
        postgres, redis, s3, standin, api, health, worker_log, trigger_log, flower = distinct_free_ports(
            9, taken={*s3_internal, s3_internal[9] + 10000})
        return cls(
            state_dir=state_dir,
            postgres_port=postgres,
            redis_port=redis,
            s3_port=s3,
            s3_internal_ports=s3_internal,
            standin_port=standin,
            api_port=api,
            offline=True,
            durable=False,
            scheduler_health_port=health,
            worker_log_port=worker_log,
            trigger_log_port=trigger_log,
            flower_port=flower,
        )

    @property
    def standin_url(self) -> str:
        return f"http://127.0.0.1:{self.standin_port}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def airflow_home(self) -> Path:
        return self.state_dir / "airflow"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def settings(self) -> airflow_settings.Settings:
        return airflow_settings.load_settings(self.settings_file)

    @cached_property
    def credentials(self) -> stack_credentials.StackCredentials:
        """This state folder's generated credentials (created on first use, then kept in secrets/)."""
        s3_store = self.state_dir / "s3" / "data"
        legacy_s3_keys = None
        if s3_store.is_dir() and any(s3_store.iterdir()):
            # An S3 store an older checkout created: its identity has the settings' keys, keep them.
            legacy_s3_keys = airflow_settings.s3_credentials(self.settings())
        return stack_credentials.load_or_create(self.state_dir, legacy_s3_keys=legacy_s3_keys)

    def connections(self) -> dict[str, dict]:
        return airflow_settings.local_connections(
            self.settings(),
            postgres_port=self.postgres_port,
            redis_port=self.redis_port,
            s3_port=self.s3_port,
            standin_url=self.standin_url if self.offline else None,
            credentials=self.credentials,
        )

    def airflow_database(self) -> tuple[str, str, str]:
        """(database, role, password) of the Airflow metadata database."""
        return (*AIRFLOW_DB, self.credentials.airflow_db)

    def warehouse_database(self) -> tuple[str, str, str]:
        """(database, role, password) of warehouse_db here: the settings' names, the generated password."""
        database, role, _ = airflow_settings.warehouse_database(self.settings())
        return database, role, self.credentials.warehouse_db

    def warehouse_url(self) -> str:
        database, role, password = self.warehouse_database()
        return airflow_settings.sqlalchemy_url(role, password, self.postgres_port, database)


EXECUTORS = {"local": "LocalExecutor", "celery": "airflow.providers.celery.executors.celery_executor.CeleryExecutor"}
CELERY_BROKER_DB = 1  # Redis database of the Celery queue; the Strava token lives in db 0
# make run's Celery workers: the first one also serves the virtualenv tasks (their caches stay warm)
# and the tasks that share local files (include/dag_defaults.py LOCAL_FILES_QUEUE).
VENV_QUEUE, LOCAL_FILES_QUEUE = "venv", "local-files"


def executor_mode(value: str) -> str:
    mode = value.strip().lower()
    if mode not in EXECUTORS:
        raise ServiceError(f"EXECUTOR={value!r}: choose one of {', '.join(EXECUTORS)}")
    return mode


def worker_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= 16:
        raise ServiceError(f"WORKERS={value!r}: a number of Celery workers from 1 to 16")
    return count


def worker_address(index: int) -> str:
    """Celery worker i's own loopback address (127.0.0.2, .3, ...): its hostname label, and where its
    log server listens - on the same port as every other worker's, as on separate machines."""
    return f"127.0.0.{index + 1}"


def default_slots() -> int:
    """Task slots for this machine: LocalExecutor parallelism and each Celery worker's concurrency.
    Airflow's default (32 LocalExecutor processes, ~135 MB each, all started at once) is sized for a
    server; 4 per core is enough to keep a laptop's cores busy with these I/O-bound tasks."""
    return max(4, 4 * (os.cpu_count() or 1))


def _internal_s3_ports() -> list[int]:
    """11 distinct free ports for SeaweedFS; the admin one (10th) low enough that it + 10000 (its
    worker's gRPC port) is a free port too. No port whose number a dead weed's /tmp socket still
    carries (S3Service.grpc_sockets_in_tmp: another user's cannot be replaced)."""
    taken = {int(match.group(1)) for path in Path("/tmp").glob("seaweedfs-*-grpc-*.sock")
             if (match := re.fullmatch(r"seaweedfs-.+-grpc-(\d+)\.sock", path.name))}
    ports = distinct_free_ports(11, taken=taken)
    low, _ = ephemeral_port_range()
    limit = low if low > 12000 else 65536  # admin + 10000 outside the ephemeral range too (see free_port)
    while ports[9] + 10000 >= limit or port_in_use(ports[9] + 10000) or ports[9] + 10000 in taken:
        ports[9] = distinct_free_ports(1, taken={*ports, *taken})[0]
    return ports


def standalone_s3_ports() -> tuple[int, list[int]]:
    """(gateway, the 11 internal ports) for one more S3Service beside a running stack: all distinct,
    and the admin port + 10000 free too."""
    internal = _internal_s3_ports()
    return distinct_free_ports(1, taken={*internal, internal[9] + 10000})[0], internal


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as docker/astro read an env file (no interpolation, optional quotes)."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def read_dockerfile_env(path: Path) -> dict[str, str]:
    """`ENV KEY=VALUE` lines of the Dockerfile: image-level Airflow settings shared with Astro."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("ENV ") and "=" in line:
            key, _, value = line[4:].strip().partition("=")
            values[key.strip()] = value.strip().strip('"')
    return values


def _persistent_secret(path: Path, factory) -> str:
    """Keys that must stay the same across restarts (Fernet-encrypted values, JWTs)."""
    if path.exists():
        return path.read_text().strip()
    stack_credentials.private_dir(path.parent)
    value = factory()
    stack_credentials.write_private(path, value)
    return value


def airflow_env(cfg: StackConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for every Airflow process of the stack.

    Precedence: the caller's environment < Dockerfile ENV < .env < .env.local < what the stack
    itself must decide (database URL, folders, ports).
    """
    from cryptography.fernet import Fernet  # noqa: PLC0415 - Airflow depends on cryptography

    env = dict(os.environ if base is None else base)
    env.update(read_dockerfile_env(cfg.root / "Dockerfile"))
    env.update(read_env_file(cfg.root / ".env"))
    env.update(read_env_file(cfg.root / ".env.local"))
    home = stack_credentials.private_dir(cfg.airflow_home)
    passwords = home / "simple_auth_manager_passwords.json"
    stack_credentials.write_private(passwords, json.dumps({UI_USER: cfg.credentials.ui_admin}))
    database, user, password = cfg.airflow_database()
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(cfg.root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(cfg.root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": EXECUTORS[cfg.executor],
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_settings.sqlalchemy_url(
                user, password, cfg.postgres_port, database
            ),
            "AIRFLOW__CORE__FERNET_KEY": _persistent_secret(
                cfg.state_dir / "secrets" / "fernet_key", lambda: Fernet.generate_key().decode()
            ),
            # 64 bytes: the JWTs are HS512, whose key should be at least that long (RFC 7518 3.2).
            "AIRFLOW__API_AUTH__JWT_SECRET": _persistent_secret(
                cfg.state_dir / "secrets" / "jwt_secret", lambda: secrets.token_urlsafe(64)
            ),
            "AIRFLOW__API__SECRET_KEY": _persistent_secret(
                cfg.state_dir / "secrets" / "api_secret_key", lambda: secrets.token_urlsafe(64)
            ),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(cfg.api_port),
            # Every listener on a port of this stack's choosing (a second stack on the same machine
            # must not share them), all on loopback: the health check by its setting, the log
            # servers by running them ourselves (see airflow_components).
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(cfg.scheduler_health_port),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(cfg.worker_log_port),
            # Where the UI fetches a running task's log from: devstack.log_server, on loopback.
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devstack.log_server.loopback_hostname",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(cfg.trigger_log_port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{cfg.api_port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{cfg.api_port}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{UI_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(cfg.log_dir / "airflow"),
            "WEATHER_OUTPUT_DIR": env.get("WEATHER_OUTPUT_DIR") or str(cfg.state_dir / "data" / "weather"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(cfg.root), env.get("PYTHONPATH")])),
            # uv (virtualenv tasks) and the venv's tools, whatever PATH the caller had.
            "PATH": os.pathsep.join(filter(None, [str(Path(sys.executable).parent), env.get("PATH")])),
        }
    )
    if cfg.offline:
        env.update(OFFLINE_VALUES)
    # Sized for the machine unless .env/.env.local/the caller says otherwise (docs/executors.md).
    env.setdefault("AIRFLOW__CORE__PARALLELISM", str(default_slots()))
    if cfg.executor == "celery":
        creds = cfg.credentials
        airflow_db, airflow_role, airflow_password = cfg.airflow_database()
        env.update({
            # Valkey (already running) is the broker, the metadata Postgres the result backend - as
            # lab 12's deployment and Astro's Celery executor do.
            "AIRFLOW__CELERY__BROKER_URL":
                f"redis://:{quote(creds.redis, safe='')}@127.0.0.1:{cfg.redis_port}/{CELERY_BROKER_DB}",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + airflow_settings.sqlalchemy_url(
                airflow_role, airflow_password, cfg.postgres_port, airflow_db).replace("+psycopg2", ""),
            "AIRFLOW__CELERY__FLOWER_HOST": "127.0.0.1",
            "AIRFLOW__CELERY__FLOWER_PORT": str(cfg.flower_port),
            # flower can revoke tasks and shut workers down: never without a login.
            "AIRFLOW__CELERY__FLOWER_BASIC_AUTH": f"{UI_USER}:{creds.ui_admin}",
            "VENV_TASK_QUEUE": VENV_QUEUE,
            "LOCAL_FILES_QUEUE": LOCAL_FILES_QUEUE,
        })
        env.setdefault("AIRFLOW__CELERY__WORKER_CONCURRENCY", str(default_slots()))
    return env


def offline_env_text(root: Path = ROOT) -> str:
    """.env.offline for `astro dev start --env .env.offline` (see devstack.settings)."""
    docker_values = {**OFFLINE_VALUES, "OAUTH_PLAIN_HTTP_HOSTS": "api-standins"}  # Strava over plain http
    return airflow_settings.docker_offline_env(airflow_settings.load_settings(root / "airflow_settings.yaml"),
                                               (root / ".env").read_text(), docker_values)


def throwaway_env(cfg: StackConfig) -> dict[str, str]:
    """Environment for in-process Airflow (tests, benchmarks): the stack's settings plus every
    connection and variable of airflow_settings.yaml as AIRFLOW_CONN_* / AIRFLOW_VAR_* variables,
    so no metadata-DB seeding is needed to reach them."""
    env = airflow_env(cfg)
    env["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    for conn_id, conn in cfg.connections().items():
        key, value = airflow_settings.connection_env(conn_id, conn)
        env[key] = value
    for name, value in cfg.settings().variables.items():
        key, value = airflow_settings.variable_env(name, value)
        if value:  # secret variables have no value in the file: .env.local / OFFLINE values stay
            env[key] = value
    return env


def migrate_metadata_db(env: dict[str, str]) -> None:
    _airflow(env, "db", "migrate", what="db migrate")


def secure_state_dir(state_dir: Path) -> None:
    """The state folder is its owner's: 0700 - 0701 when we are root, as Postgres then runs as
    airflow-pg, which must pass through it to its own folder (services.py _ensure_system_user) - and so
    is every folder in it that is ours (Postgres's own folders are airflow-pg's, 0700 too)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if state_dir.stat().st_uid == os.geteuid():
        state_dir.chmod(0o701 if os.geteuid() == 0 else 0o700)
    for name in ("airflow", "data", "logs", "redis", "s3", "secrets", "standins"):
        (state_dir / name).mkdir(mode=0o700, exist_ok=True)
    for child in state_dir.iterdir():
        if child.is_dir() and not child.is_symlink() and child.stat().st_uid == os.geteuid():
            child.chmod(0o700)


def postgres_service(cfg: StackConfig) -> PostgresService:
    return PostgresService(cfg.state_dir / "postgres", cfg.log_dir, cfg.postgres_port,
                           databases=[cfg.airflow_database(), cfg.warehouse_database()], fsync=cfg.durable,
                           superuser_password=cfg.credentials.postgres_superuser)


def redis_service(cfg: StackConfig) -> RedisService:
    return RedisService(cfg.state_dir / "redis", cfg.log_dir, cfg.redis_port, persist=cfg.durable,
                        password=cfg.credentials.redis)


def start_services(cfg: StackConfig) -> list[Service]:
    """Postgres, Redis, S3 and the API stand-ins; stops what it started if one of them fails."""
    secure_state_dir(cfg.state_dir)
    creds = cfg.credentials
    services: list[Service] = [
        postgres_service(cfg),
        redis_service(cfg),
        S3Service(cfg.state_dir / "s3", cfg.log_dir, cfg.s3_port, cfg.s3_internal_ports,
                  creds.s3_access_key, creds.s3_secret_key, airflow_settings.BUCKETS),
        CommandService("api-standins", [sys.executable, "-m", "devstack.standins", "--port", str(cfg.standin_port),
                                        "--state-dir", str(cfg.state_dir / "standins")],
                       cfg.state_dir / "standins", cfg.log_dir, [cfg.standin_port],
                       env={**os.environ, "PYTHONPATH": str(cfg.root)},
                       ready=http_ok(f"{cfg.standin_url}/_standin/health"), start_timeout=30),
    ]
    started: list[Service] = []
    try:
        for service in services:
            started_at = time.monotonic()
            service.start()
            started.append(service)
            print(f"  {service.name:<13} ready on 127.0.0.1:{service.ports[0]} "
                  f"({time.monotonic() - started_at:.1f}s)", flush=True)
    except BaseException:
        stop_all(started)
        raise
    return started


def stop_all(services: list[Service]) -> None:
    for service in reversed(services):
        started = time.monotonic()
        service.stop()
        if time.monotonic() - started > 3:
            print(f"  stopped {service.name} ({time.monotonic() - started:.0f}s)", flush=True)


def _airflow(env: dict[str, str], *args: str, what: str) -> None:
    result = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"airflow {what} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def migrate_and_seed(cfg: StackConfig, env: dict[str, str]) -> None:
    _airflow(env, "db", "migrate", what="db migrate")
    conn_file = stack_credentials.private_dir(cfg.state_dir / "secrets") / "connections.json"
    stack_credentials.write_private(conn_file, json.dumps(cfg.connections()))
    result = subprocess.run([sys.executable, "-m", "devstack.settings", str(cfg.settings_file), str(conn_file)],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"applying airflow_settings.yaml failed:\n{result.stderr[-3000:]}")
    print(result.stdout, end="", flush=True)


def seed_offline_strava_token(env: dict[str, str]) -> str:
    """OFFLINE=1: the Strava stand-in's first token into Redis, unless one is there already (a
    restart keeps the rotated token), so strava_data_pipeline runs with no manual step. What `make
    strava-token OFFLINE=1 CODE=offline-authorization-code` does."""
    from devstack.standins.strava import DEFAULT_CONFIG  # noqa: PLC0415

    result = subprocess.run([sys.executable, "-m", "include.strava_token", "--if-missing",
                             "--code", DEFAULT_CONFIG["strava_authorization_code"]],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise ServiceError(f"seeding the offline Strava token failed: {result.stderr.strip()[-1000:]}")
    return result.stdout.strip()


def credentials_banner(cfg: StackConfig, everything: bool = False) -> str:
    """Where to log in, for `make run`'s start-up output (the UI and the warehouse) and, with
    everything=True, `make credentials` (every server). The values are generated on the first start
    and kept in the state folder's secrets/ (devstack/credentials.py)."""
    creds = cfg.credentials
    database, role, password = cfg.warehouse_database()

    def pg_url(user: str, secret: str, db: str) -> str:
        return f"postgresql://{quote(user, safe='')}:{quote(secret, safe='')}@127.0.0.1:{cfg.postgres_port}/{db}"

    lines = [
        f"Credentials (generated, kept in {stack_credentials.secrets_dir(cfg.state_dir) / stack_credentials.FILE_NAME}"
        f"{'' if everything else '; all of them: make credentials'}):",
        f"  UI            http://127.0.0.1:{cfg.api_port}  login {UI_USER} / {creds.ui_admin}",
        f"  warehouse_db  psql '{pg_url(role, password, database)}'",
    ]
    if everything:
        airflow_db, airflow_role, airflow_password = cfg.airflow_database()
        lines += [
            f"  metadata DB   psql '{pg_url(airflow_role, airflow_password, airflow_db)}'",
            f"  superuser     psql '{pg_url('postgres', creds.postgres_superuser, 'postgres')}'",
            f"  redis         redis://:{quote(creds.redis, safe='')}@127.0.0.1:{cfg.redis_port}/0",
            f"  S3            {cfg.s3_url}  access key {creds.s3_access_key}  secret key {creds.s3_secret_key}",
        ]
    return "\n".join(lines)


def airflow_components(cfg: StackConfig, env: dict[str, str]) -> list[Service]:
    health = f"http://127.0.0.1:{cfg.api_port}/api/v2/monitor/health"

    def component(name: str, args: list[str], ports: list[int], ready) -> CommandService:
        command = [sys.executable, *args] if args[0] == "-m" else [sys.executable, "-m", "airflow", *args]
        return CommandService(f"airflow-{name}", command, cfg.airflow_home, cfg.log_dir, ports, env=env,
                              ready=ready, start_timeout=180)

    def healthy(part: str, holder: list[Service]):
        """Healthy by a heartbeat of this very process: after a restart, the API reports the dead
        one's last heartbeat as healthy for another 30 s."""

        def probe() -> bool:
            import urllib.request  # noqa: PLC0415
            from datetime import datetime  # noqa: PLC0415

            with urllib.request.urlopen(health, timeout=3) as resp:  # noqa: S310 - local URL
                status = json.load(resp).get(part, {})
            beat = status.get(f"latest_{part}_heartbeat")
            return (status.get("status") == "healthy" and beat is not None
                    and datetime.fromisoformat(beat).timestamp() >= holder[0].started_at - 1)

        return probe

    def watched(name: str, args: list[str], ports: list[int], part: str) -> CommandService:
        holder: list[Service] = []
        holder.append(component(name, args, ports, healthy(part, holder)))
        return holder[0]

    def celery_worker(index: int) -> list[Service]:
        """Worker i as if on a machine of its own: its own address (hostname label and log server),
        working directory, temp dir and uv cache; the first one also serves the virtualenv tasks'
        queue, so their venvs and uv cache stay warm there."""
        address, name = worker_address(index), f"worker-{index}"
        home = cfg.state_dir / "workers" / name
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        worker_env = env | {"DEVSTACK_HOSTNAME": address, "TMPDIR": str(home / "tmp"),
                            "UV_CACHE_DIR": str(home / "uv-cache")}
        queues = f"default,{VENV_QUEUE},{LOCAL_FILES_QUEUE}" if index == 1 else "default"
        celery_name = f"{name}@devstack"
        holder: list[Service] = []

        def ready() -> bool:  # Celery logs "<name> ready." once it consumes from the broker
            return f"{celery_name} ready." in holder[0].log_since_start()

        holder.append(CommandService(
            f"airflow-{name}", [sys.executable, "-m", "airflow", "celery", "worker", "--celery-hostname", celery_name,
                                "--queues", queues, "--skip-serve-logs"],
            home, cfg.log_dir, [], env=worker_env, ready=ready, start_timeout=180))
        logs = CommandService(
            f"airflow-{name}-logs", [sys.executable, "-m", "devstack.log_server", "--host", address,
                                     str(cfg.worker_log_port)],
            home, cfg.log_dir, [cfg.worker_log_port], env=worker_env, host=address,
            ready=lambda: port_in_use(cfg.worker_log_port, address))
        return [logs, holder[0]]

    celery = []
    if cfg.executor == "celery":
        for index in range(1, cfg.workers + 1):
            celery += celery_worker(index)
        celery.append(component("flower", ["celery", "flower"], [cfg.flower_port],
                                lambda: port_in_use(cfg.flower_port)))
    return [
        component("api-server", ["api-server", "--port", str(cfg.api_port), "--host", "127.0.0.1"],
                  [cfg.api_port], http_ok(health)),
        # Their log servers would bind every interface: devstack.log_server serves both on loopback.
        component("log-server", ["-m", "devstack.log_server", str(cfg.worker_log_port), str(cfg.trigger_log_port)],
                  [cfg.worker_log_port, cfg.trigger_log_port],
                  lambda: all(port_in_use(port) for port in (cfg.worker_log_port, cfg.trigger_log_port))),
        watched("scheduler", ["scheduler", "--skip-serve-logs"], [cfg.scheduler_health_port], "scheduler"),
        watched("dag-processor", ["dag-processor"], [], "dag_processor"),
        watched("triggerer", ["triggerer", "--skip-serve-logs"], [], "triggerer"),
        *celery,
    ]


def supervise(cfg: StackConfig, running: list[Service]) -> Supervisor:
    """Restart what exits, servers first; Airflow's components once Postgres (and, for the others,
    the API server they talk to) answer again. Restarts go to the console and logs/supervisor.log."""
    log_file = cfg.log_dir / "supervisor.log"

    def log(message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        print(f"  {line}", flush=True)
        with open(log_file, "a") as out:
            out.write(line + "\n")

    supervisor = Supervisor(log)
    by_name = {service.name: service for service in running}
    postgres, api_server = by_name["postgres"], by_name.get("airflow-api-server")
    for service in running:
        if not service.name.startswith("airflow-"):
            supervisor.add(service, liveness=True)
        elif service is api_server:
            supervisor.add(service, needs=[postgres])
        elif service.name.startswith(("airflow-worker-", "airflow-flower")):  # the broker too
            supervisor.add(service, needs=[postgres, by_name["redis"], *([api_server] if api_server else [])])
        else:
            supervisor.add(service, needs=[postgres, *([api_server] if api_server else [])])
    return supervisor


def run_forever(offline: bool) -> int:
    """`make run`: start everything, print where it is, wait for Ctrl-C, stop everything."""
    try:
        cfg = StackConfig.for_run(offline)
    except ServiceError as exc:
        print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        return 2
    started_at = time.monotonic()
    running: list[Service] = []
    stop_requested = ""

    def on_signal(signum, _frame):
        nonlocal stop_requested
        stop_requested = signal.Signals(signum).name
        raise KeyboardInterrupt

    # Explicit handlers: a shell may start us with SIGINT ignored (background job), and a
    # closed terminal sends SIGHUP - every one of them must stop what we started.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    mode = ", OFFLINE: APIs answered by stand-ins" if offline else ""
    if offline:  # issue #21: TLC months at 1/50 of their real size (STANDIN_TLC_SCALE=1 for the real counts)
        from devstack.standins import tlc  # noqa: PLC0415 - only the offline stack needs it

        os.environ.setdefault(tlc.SCALE_ENV, str(tlc.OFFLINE_SCALE))
        mode += f", TLC months scaled to {float(os.environ[tlc.SCALE_ENV]):g} of their real size"
    if cfg.executor == "celery":
        mode += f", CeleryExecutor with {cfg.workers} worker(s)"
    print(f"Starting the local stack (state in {cfg.state_dir}{mode})", flush=True)
    try:
        running += start_services(cfg)
        env = airflow_env(cfg)
        migrate_and_seed(cfg, env)
        if offline:
            print(f"  strava token  {seed_offline_strava_token(env)}", flush=True)
        for component in airflow_components(cfg, env):
            t0 = time.monotonic()
            component.start()
            running.append(component)
            print(f"  {component.name:<13} healthy ({time.monotonic() - t0:.1f}s)", flush=True)
        print(
            "\n"
            f"Airflow is up in {time.monotonic() - started_at:.0f}s: http://127.0.0.1:{cfg.api_port}\n"
            f"  S3            {cfg.s3_url}   redis 127.0.0.1:{cfg.redis_port}\n"
            f"  API stand-ins {cfg.standin_url}{'' if offline else ' (not used: OFFLINE=1 to use them)'}\n"
            f"  logs          {cfg.log_dir}\n"
            + (f"  flower        http://127.0.0.1:{cfg.flower_port}  (Celery workers "
               f"{', '.join(f'worker-{i}@devstack' for i in range(1, cfg.workers + 1))}; the UI's login)\n"
               if cfg.executor == "celery" else "")
            + f"{credentials_banner(cfg)}\n"
            "Press Ctrl-C to stop every process started here.",
            flush=True,
        )
        supervise(cfg, running).run()
    except KeyboardInterrupt:
        print("\nStopping the local stack ...", flush=True)
        return 0
    except ServiceError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not abort the cleanup
        stop_all(running)
        print(f"Stopped{f' ({stop_requested})' if stop_requested else ''}.", flush=True)
