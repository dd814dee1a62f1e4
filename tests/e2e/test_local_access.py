"""No way into the local stack without its generated credentials (issue 12).

Another local user must not get into the stack's servers or read its state: Postgres asks every
login (socket and TCP) for a password and its socket is owner-only, Redis wants AUTH, S3 refuses the
committed example keys, the UI refuses admin/admin, and the state folder (Redis files, `secrets/`,
logs) is owner-only.

When the tests run as root (CI containers, this repo's machine) the probes really run as another user,
`nobody`: a stdlib-only Python script (no psql, no redis-cli, no venv - the venv may sit in a folder
`nobody` cannot enter) with nobody's uid, gid and no supplementary groups, as services.py `_as_user`
starts Postgres. A non-root test process cannot switch users: then the file checks assert the modes
that keep other users out instead, and the network checks (passwords, AUTH) run as the test's own user,
which tests the same rule - a login without the generated password is refused.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import _STACK

pytestmark = pytest.mark.make_test

AS_ROOT = os.geteuid() == 0
OTHER_USER = "nobody"
# The defaults the stack used to have: none of them may log in anywhere.
OLD_PASSWORDS = {"postgres": "postgres", "airflow": "airflow", "warehouse": "warehouse"}
OLD_S3_KEYS = ("local-access-key", "local-secret-key")

# Run as another user with a system Python: stdlib only. Takes a JSON list of checks on stdin and
# prints a JSON list of outcomes: "ok ..." when it got in, anything else when it was refused.
PROBE = r'''
import base64, hashlib, hmac, json, os, socket, struct, sys

def pg_messages(sock):
    buf = b""
    while True:
        while len(buf) < 5:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        kind, length = buf[:1], struct.unpack("!i", buf[1:5])[0]
        while len(buf) < 1 + length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        yield kind, buf[5:1 + length]
        buf = buf[1 + length:]

def pg_error(body):
    fields = dict((f[:1], f[1:].decode(errors="replace")) for f in body.split(b"\0") if f)
    return fields.get(b"M", "error")

def pg_login(target, user, password):
    """Postgres protocol 3 up to AuthenticationOk: trust, cleartext, md5 and SCRAM-SHA-256."""
    if target.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(target)
    else:
        host, port = target.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=10)
    with sock:
        params = b"user\0" + user.encode() + b"\0database\0postgres\0\0"
        sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        messages = pg_messages(sock)
        send = lambda data: sock.sendall(b"p" + struct.pack("!i", 4 + len(data)) + data)
        for kind, body in messages:
            if kind == b"E":
                return "refused: " + pg_error(body)
            if kind != b"R":
                continue
            code = struct.unpack("!i", body[:4])[0]
            if code == 0:
                return "ok: logged in as " + user
            if password is None:
                return "refused: the server asks for a password (auth code %d)" % code
            if code == 3:
                send(password.encode() + b"\0")
            elif code == 5:
                inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
                send(b"md5" + hashlib.md5(inner.encode() + body[4:8]).hexdigest().encode() + b"\0")
            elif code == 10:
                nonce = base64.b64encode(os.urandom(18)).decode()
                first_bare = "n=,r=" + nonce
                first = ("n,," + first_bare).encode()
                send(b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
                kind, body = next(messages)
                if kind == b"E":
                    return "refused: " + pg_error(body)
                server_first = body[4:].decode()
                attrs = dict(item.split("=", 1) for item in server_first.split(","))
                salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                             int(attrs["i"]))
                client_key = hmac.new(salted, b"Client Key", "sha256").digest()
                without_proof = "c=biws,r=" + attrs["r"]
                auth_message = ",".join([first_bare, server_first, without_proof]).encode()
                signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, "sha256").digest()
                proof = bytes(a ^ b for a, b in zip(client_key, signature))
                send((without_proof + ",p=" + base64.b64encode(proof).decode()).encode())
            elif code in (11, 12):
                continue
            else:
                return "refused: unsupported auth code %d" % code
    return "refused: no answer"

def redis_command(port, command):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(command.encode() + b"\r\n")
        return sock.recv(256).decode(errors="replace").strip()

def read(path):
    with open(path, "rb") as handle:
        return "ok: read %d bytes" % len(handle.read())

def listdir(path):
    return "ok: listed %s" % sorted(os.listdir(path))

results = []
for name, *args in json.load(sys.stdin):
    try:
        results.append({"pg_login": pg_login, "redis": redis_command, "read": read, "listdir": listdir}[name](*args))
    except OSError as exc:
        results.append("refused: %s: %s" % (type(exc).__name__, exc))
print(json.dumps(results))
'''


def _python_for(user: str) -> str | None:
    """A Python interpreter `user` can run (the venv's may sit under a private home)."""
    entry = pwd.getpwnam(user)
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3") or ""):
        if candidate and Path(candidate).exists():
            result = subprocess.run([candidate, "-c", "pass"], capture_output=True, cwd="/",
                                    user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], check=False)
            if result.returncode == 0:
                return candidate
    return None


def _probe(checks: list[list], *, as_other_user: bool = True) -> list[str]:
    """Run the checks as `nobody` (when we are root), else as this test's own user."""
    kwargs: dict = {"cwd": "/", "env": {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}}
    python = sys.executable
    if as_other_user and AS_ROOT:
        python = _python_for(OTHER_USER)
        if python is None:
            pytest.fail(f"running as root, but no Python interpreter that {OTHER_USER!r} may run was found")
        entry = pwd.getpwnam(OTHER_USER)
        kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
    result = subprocess.run([python, "-c", PROBE], input=json.dumps(checks), capture_output=True, text=True,
                            timeout=120, check=False, **kwargs)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _services() -> dict:
    return {service.name: service for service in _STACK["services"]}


def _got_in(outcomes: list[str]) -> list[str]:
    return [outcome for outcome in outcomes if outcome.startswith("ok")]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_postgres_socket_lets_no_other_user_in(stack):
    """The old cluster trusted every local login: `psql -h .local/postgres/socket -U postgres` worked for
    anyone on the machine. Now the socket folder is the server's alone and every login needs a password."""
    postgres = _services()["postgres"]
    sock = str(postgres.socket_dir / f".s.PGSQL.{postgres.port}")
    attempts = [("postgres", None), *OLD_PASSWORDS.items()]
    checks = [["pg_login", sock, user, password] for user, password in attempts]

    outcomes = _probe(checks)

    assert _got_in(outcomes) == [], dict(zip(map(str, attempts), outcomes, strict=True))
    hba = (postgres.pgdata / "pg_hba.conf").read_text()
    rules = [line.split() for line in hba.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules), hba
    if not AS_ROOT:  # no other user to probe with: the modes that keep them out
        assert _mode(postgres.socket_dir) & 0o077 == 0
        assert _mode(Path(sock)) & 0o077 == 0


def test_postgres_tcp_refuses_the_old_and_empty_passwords(stack):
    port = _services()["postgres"].port
    attempts = [("postgres", None), *OLD_PASSWORDS.items()]

    outcomes = _probe([["pg_login", f"127.0.0.1:{port}", user, password] for user, password in attempts])

    assert _got_in(outcomes) == [], dict(zip(map(str, attempts), outcomes, strict=True))
    for outcome in outcomes:
        assert "password" in outcome, outcome  # refused for its password, not for an unrelated reason


def test_redis_wants_auth(stack):
    outcomes = _probe([["redis", stack.cfg.redis_port, "PING"], ["redis", stack.cfg.redis_port, "GET STRAVA_TOKEN"]])

    assert all(outcome.startswith("-NOAUTH") for outcome in outcomes), outcomes


def test_redis_files_are_the_servers_own(stack):
    """The AOF/RDB files hold the Strava refresh token: mode 600 in a 700 folder."""
    from airflow.providers.redis.hooks.redis import RedisHook

    RedisHook(redis_conn_id="redis_default").get_conn().save()  # writes dump.rdb, as `save 60 1` does
    redis_dir = _services()["redis"].data_dir
    files = sorted(path for path in redis_dir.rglob("*") if path.is_file())
    assert redis_dir / "dump.rdb" in files

    outcomes = _probe([["listdir", str(redis_dir)]] + [["read", str(path)] for path in files])

    if AS_ROOT:
        assert _got_in(outcomes) == [], dict(zip(["folder", *map(str, files)], outcomes, strict=True))
    assert _mode(redis_dir) == 0o700
    assert {str(path): _mode(path) for path in files} == {str(path): 0o600 for path in files}


def test_secrets_and_state_are_owner_only(stack):
    state = stack.cfg.state_dir
    secrets = state / "secrets"
    files = sorted(path for path in secrets.iterdir() if path.is_file())
    assert files, "the stack keeps its generated keys in secrets/"
    logs = sorted(path for path in (state / "logs").glob("*.log"))
    assert logs

    outcomes = _probe([["listdir", str(state)], ["listdir", str(secrets)], ["listdir", str(state / "logs")],
                       *(["read", str(path)] for path in files + logs)])

    if AS_ROOT:
        assert _got_in(outcomes) == [], outcomes
    # 0701 when root: the Postgres server user (airflow-pg) must traverse it to its own folder.
    assert _mode(state) in ((0o700, 0o701) if AS_ROOT else (0o700,))
    for child in state.iterdir():
        if child.is_dir() and child.stat().st_uid == os.geteuid():
            assert _mode(child) == 0o700, child
    assert _mode(secrets) == 0o700
    assert {path.name: _mode(path) for path in files} == {path.name: 0o600 for path in files}


def test_ui_refuses_admin_admin_and_takes_the_generated_password(stack):
    """The api-server is not part of the test stack: the simple auth manager's own login service
    (what POST /auth/token runs) checks the passwords file the stack writes for it."""
    from airflow.api_fastapi.app import init_auth_manager
    from airflow.api_fastapi.auth.managers.simple.datamodels.login import LoginBody
    from airflow.api_fastapi.auth.managers.simple.services.login import SimpleAuthManagerLogin
    from airflow.configuration import conf
    from fastapi import HTTPException

    assert conf.get("core", "auth_manager").endswith("SimpleAuthManager")
    assert not conf.getboolean("core", "simple_auth_manager_all_admins")
    passwords_file = Path(conf.get("core", "simple_auth_manager_passwords_file"))
    written = passwords_file.read_text()
    init_auth_manager()  # what the api-server does when it starts: adds a password for a user without one
    assert passwords_file.read_text() == written, "the stack's passwords file must already name every user"
    passwords = json.loads(written)

    with pytest.raises(HTTPException) as refused:
        SimpleAuthManagerLogin.create_token(LoginBody(username="admin", password="admin"))
    assert refused.value.status_code == 401
    assert set(passwords) == {"admin"} and len(passwords["admin"]) >= 20
    assert SimpleAuthManagerLogin.create_token(LoginBody(username="admin", password=passwords["admin"]))
    assert _mode(passwords_file) == 0o600
    if AS_ROOT:
        assert _got_in(_probe([["read", str(passwords_file)]])) == []


def test_s3_refuses_the_committed_example_keys(stack):
    import boto3
    import botocore.exceptions

    client = boto3.client("s3", endpoint_url=stack.cfg.s3_url, region_name="us-east-1",
                          aws_access_key_id=OLD_S3_KEYS[0], aws_secret_access_key=OLD_S3_KEYS[1])
    with pytest.raises(botocore.exceptions.ClientError):
        client.list_buckets()
    with pytest.raises(botocore.exceptions.ClientError):
        client.list_objects_v2(Bucket="weather-data")


def test_connections_carry_the_generated_credentials(stack):
    conns = stack.cfg.connections()
    creds = stack.cfg.credentials

    assert conns["warehouse_db"]["password"] == creds.warehouse_db != OLD_PASSWORDS["warehouse"]
    assert conns["redis_default"]["password"] == creds.redis
    assert (conns["aws_default"]["login"], conns["aws_default"]["password"]) == (creds.s3_access_key,
                                                                                  creds.s3_secret_key)
    assert (creds.s3_access_key, creds.s3_secret_key) != OLD_S3_KEYS
    assert os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].count(creds.airflow_db) == 1
    # Every one generated, none reused for another.
    values = [creds.postgres_superuser, creds.airflow_db, creds.warehouse_db, creds.redis, creds.s3_secret_key,
              creds.ui_admin]
    assert len(set(values)) == len(values) and min(map(len, values)) >= 20


def _legacy_cluster(postgres) -> None:
    """initdb exactly as the old PostgresService.prepare ran it: superuser password `postgres`,
    every local (socket) login trusted."""
    from devstack.services import _as_user

    postgres.data_dir.mkdir(parents=True, exist_ok=True)
    postgres._ensure_system_user()  # the server user and its folders, as every start makes them
    pwfile = postgres.data_dir / "initdb-password"
    pwfile.write_text("postgres\n")
    if postgres.run_as_user is not None:
        entry = pwd.getpwnam(postgres.run_as_user)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    subprocess.run([str(postgres.bin / "initdb"), "-D", str(postgres.pgdata), "-U", "postgres", "--auth-local=trust",
                    "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C"],
                   check=True, capture_output=True, cwd=postgres.data_dir, **_as_user(postgres.run_as_user))
    pwfile.unlink()
    assert "trust" in (postgres.pgdata / "pg_hba.conf").read_text()


def test_a_state_dir_of_the_old_code_is_migrated_on_start():
    """`.local/` of an older checkout keeps working: its Postgres cluster (superuser `postgres`, trusted
    socket) gets the generated password and password-only logins, its Redis files and secrets folder
    become owner-only, and its S3 store keeps the keys it was created with."""
    from devstack.stack import StackConfig, postgres_service, redis_service, secure_state_dir

    state = Path(tempfile.mkdtemp(prefix="airflow-project-legacy-"))
    services = []
    try:
        cfg = StackConfig.for_tests(state)
        (state / "secrets").mkdir(mode=0o755)
        (state / "secrets" / "fernet_key").write_text("old")
        (state / "redis" / "appendonlydir").mkdir(parents=True)
        for old_file in (state / "redis" / "dump.rdb", state / "redis" / "appendonlydir" / "a.aof"):
            old_file.write_bytes(b"old")
            old_file.chmod(0o644)
        (state / "s3" / "data").mkdir(parents=True)
        (state / "s3" / "data" / "filer.db").write_bytes(b"an S3 store made with the old keys")
        cfg.durable = True
        secure_state_dir(state)
        _legacy_cluster(postgres_service(cfg))

        creds = cfg.credentials
        assert (creds.s3_access_key, creds.s3_secret_key) == OLD_S3_KEYS  # the store's identity stays
        for service in (postgres_service(cfg), redis_service(cfg)):
            service.start()
            services.append(service)
        postgres = services[0]

        outcomes = _probe([["pg_login", f"127.0.0.1:{cfg.postgres_port}", "postgres", "postgres"],
                           ["pg_login", f"127.0.0.1:{cfg.postgres_port}", "postgres", None],
                           ["pg_login", f"127.0.0.1:{cfg.postgres_port}", "airflow", "airflow"],
                           ["pg_login", str(postgres.socket_dir / f".s.PGSQL.{cfg.postgres_port}"), "postgres",
                            None]])
        assert _got_in(outcomes) == [], outcomes
        mine = _probe([["pg_login", f"127.0.0.1:{cfg.postgres_port}", "postgres", creds.postgres_superuser],
                       ["pg_login", f"127.0.0.1:{cfg.postgres_port}", "airflow", creds.airflow_db]],
                      as_other_user=False)
        assert all(outcome.startswith("ok") for outcome in mine), mine
        assert "trust" not in (postgres.pgdata / "pg_hba.conf").read_text()
        # A second start finds the migrated cluster and logs in with the generated password at once.
        postgres.stop()
        postgres.start()
        assert postgres.psql("SELECT current_user") == "postgres"
        assert _mode(state / "secrets") == _mode(state / "redis") == 0o700
        assert {_mode(path) for path in (state / "redis").rglob("*") if path.is_file()} == {0o600}
        assert StackConfig.for_tests(state).credentials == creds  # kept, not regenerated
        fresh = StackConfig.for_tests(Path(tempfile.mkdtemp(prefix="airflow-project-fresh-")))
        try:
            assert (fresh.credentials.s3_access_key, fresh.credentials.s3_secret_key) != OLD_S3_KEYS
        finally:
            shutil.rmtree(fresh.state_dir, ignore_errors=True)
    finally:
        for service in reversed(services):
            service.stop()
        shutil.rmtree(state, ignore_errors=True)
