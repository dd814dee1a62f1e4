"""The local stack's generated credentials, kept in its state folder (`.local/secrets/`).

Every password the local servers ask for is generated here with `secrets` on the first start and kept
in `<state>/secrets/credentials.json` (folder 0700, file 0600), so a restart - and a `.local/` carried
over from an earlier start - finds the same ones. Who reads them:
- devstack/services.py: the Postgres superuser password (initdb, pg_hba.conf scram-sha-256), the Redis
  `requirepass` (a 0600 config file, never the command line), the S3 server's identity;
- devstack/settings.py `local_connections`: the warehouse_db, redis_default and aws_default
  connections of the local stack; devstack/stack.py: the metadata DB URL and the UI's passwords file;
- people: `make run` prints the UI login and the warehouse URL, `make credentials` prints them all
  (devstack/stack.py credentials_banner).

The committed airflow_settings.yaml keeps example values for the Astro/Docker path; locally they
are never used, except the S3 keys of an S3 store created before credentials were generated (its
identity was made with them on its first start and cannot be changed from outside).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, fields
from pathlib import Path

FILE_NAME = "credentials.json"
# What the local stack's Postgres superuser had before credentials were generated: a cluster made
# then is migrated to the generated password on its next start (services.py PostgresService).
LEGACY_POSTGRES_SUPERUSER_PASSWORD = "postgres"  # noqa: S105 - the old default, only to replace it


@dataclass(frozen=True)
class StackCredentials:
    postgres_superuser: str  # role `postgres`
    airflow_db: str  # role `airflow`, the metadata database
    warehouse_db: str  # the warehouse_db connection's role
    redis: str  # requirepass (user `default`)
    s3_access_key: str
    s3_secret_key: str
    ui_admin: str  # the UI's `admin` user (Simple auth manager)

    def __repr__(self) -> str:  # never in a traceback or a log line by accident
        return "StackCredentials(<hidden>)"


def _token() -> str:
    # URL-safe: no quoting needed in URLs, connection strings or the Redis config file.
    return secrets.token_urlsafe(24)


def _generators(legacy_s3_keys: tuple[str, str] | None) -> dict:
    access_key = "devstack" + secrets.token_hex(8)
    return {
        "postgres_superuser": _token,
        "airflow_db": _token,
        "warehouse_db": _token,
        "redis": _token,
        "s3_access_key": lambda: legacy_s3_keys[0] if legacy_s3_keys else access_key,
        "s3_secret_key": lambda: legacy_s3_keys[1] if legacy_s3_keys else _token(),
        "ui_admin": _token,
    }


def private_dir(path: Path) -> Path:
    """A folder only its owner may enter (0700): created so, and tightened when it exists and is ours."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid == os.geteuid():
        path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read: 0600 from its creation on, no window with wider modes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def secrets_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "secrets"


def load_or_create(state_dir: Path, legacy_s3_keys: tuple[str, str] | None = None) -> StackCredentials:
    """The stack's credentials: read from `<state>/secrets/credentials.json`, any missing one generated
    and written back (a new credential added here reaches existing state folders too).

    legacy_s3_keys: the keys an existing S3 store was created with, used instead of new ones when the
    file has none yet (an S3 store of an older checkout; SeaweedFS makes its identity on its first start).
    """
    folder = private_dir(secrets_dir(state_dir))
    path = folder / FILE_NAME
    stored: dict = {}
    if path.exists():
        stored = json.loads(path.read_text() or "{}")
        if path.stat().st_uid == os.geteuid():
            path.chmod(0o600)
    values = dict(stored)
    for name, generate in _generators(legacy_s3_keys).items():
        if not values.get(name):
            values[name] = generate()
    if values != stored:
        tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        write_private(tmp, json.dumps(values, indent=2) + "\n")
        os.replace(tmp, path)  # a crash mid-write never leaves a half-written file
    return StackCredentials(**{field.name: values[field.name] for field in fields(StackCredentials)})
