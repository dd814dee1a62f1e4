"""The local S3 (SeaweedFS `weed mini`) has one way in: the S3 gateway, with the access key.

`weed mini` also runs a master, a volume server, a filer, an S3 gRPC service and an admin server,
each on its own 127.0.0.1 port. Any local user can reach those ports, so each test here tries one of
them without credentials - upload, read, delete, or plant an S3 identity - and expects a refusal,
while the authenticated S3 path (boto3, pyarrow, s3fs, multipart) keeps working.
"""

from __future__ import annotations

import os
import secrets
import struct
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

BUCKET = "weather-data"
PREFIX = "lockdown-probe"
# Names of stack.cfg.s3_internal_ports, in order.
PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc", "iceberg",
              "lance", "admin", "metrics")


# -- helpers -------------------------------------------------------------------------------------
def _ports(stack) -> dict[str, int]:
    return dict(zip(PORT_NAMES, stack.cfg.s3_internal_ports, strict=True))


def _s3_service():
    from tests.conftest import _STACK

    (service,) = [s for s in _STACK["services"] if s.name == "s3"]
    return service


def _http(method: str, url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int | None, bytes]:
    """(status, body); status None when nothing answers HTTP on that port."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - local URL
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None, b""


def _multipart(field: str, filename: str, content: bytes) -> tuple[bytes, dict]:
    boundary = secrets.token_hex(8)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _put_object(stack, name: str, size: int = 64 * 1024) -> tuple[str, bytes]:
    """An object written through authenticated S3: big enough to live in a volume-server chunk."""
    key = f"{PREFIX}/{name}-{secrets.token_hex(4)}"
    body = b"lockdown-secret-" + secrets.token_bytes(size)
    stack.s3().put_object(Bucket=BUCKET, Key=key, Body=body)
    return key, body


def _s3_has(stack, key: str) -> bool:
    import botocore.exceptions

    try:
        stack.s3().head_object(Bucket=BUCKET, Key=key)
    except botocore.exceptions.ClientError as err:
        assert err.response["Error"]["Code"] in ("404", "NoSuchKey"), err
        return False
    return True


# Protocol buffers by hand: grpcio is installed, SeaweedFS's generated stubs are not.
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    if isinstance(value, str):
        value = value.encode()
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _parse(message: bytes) -> list[tuple[int, object]]:
    """(field number, int | bytes) pairs of a protobuf message."""
    fields, pos = [], 0

    def varint() -> int:
        nonlocal pos
        result = shift = 0
        while True:
            byte = message[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while pos < len(message):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.append((number, varint()))
        elif wire == 2:
            length = varint()
            fields.append((number, message[pos:pos + length]))
            pos += length
        elif wire == 5:
            fields.append((number, struct.unpack("<I", message[pos:pos + 4])[0]))
            pos += 4
        elif wire == 1:
            fields.append((number, struct.unpack("<Q", message[pos:pos + 8])[0]))
            pos += 8
        else:
            raise ValueError(f"wire type {wire}")
    return fields


def _grpc(port: int, method: str, request: bytes = b"", credentials=None):
    """(status code, response bytes or error details) of one unary call."""
    import grpc

    target = f"127.0.0.1:{port}"
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        try:
            return grpc.StatusCode.OK, channel.unary_unary(method)(request, timeout=10)
        except grpc.RpcError as err:
            return err.code(), err.details()


def _owner_credentials():
    """The stack's own gRPC client certificate, as the supervisor (its owner) can read it; None when
    the stack has none (plaintext gRPC)."""
    import grpc

    config = _s3_service().data_dir / "security.toml"
    if not config.exists():
        return None
    grpc_conf = tomllib.loads(config.read_text())["grpc"]
    return grpc.ssl_channel_credentials(root_certificates=Path(grpc_conf["ca"]).read_bytes(),
                                        private_key=Path(grpc_conf["client"]["key"]).read_bytes(),
                                        certificate_chain=Path(grpc_conf["client"]["cert"]).read_bytes())


def _lookup(stack, key: str, credentials=None):
    directory, _, name = f"/buckets/{BUCKET}/{key}".rpartition("/")
    return _grpc(_ports(stack)["filer_grpc"], "/filer_pb.SeaweedFiler/LookupDirectoryEntry",
                 _field(1, directory) + _field(2, name), credentials)


def _fid_of(stack, key: str) -> str:
    """The volume-server file id of the object's first chunk, looked up as the stack's owner."""
    import grpc

    code, response = _lookup(stack, key, _owner_credentials())
    assert code == grpc.StatusCode.OK, (code, response)
    entry = dict(_parse(response))[1]
    chunks = [dict(_parse(value)) for number, value in _parse(entry) if number == 3]
    assert chunks, "the object was stored inline, not in a volume-server chunk"
    chunk = chunks[0]
    if chunk.get(1):
        return chunk[1].decode()
    fid = dict(_parse(chunk[7]))
    key_cookie = struct.pack(">QI", fid.get(2, 0), fid.get(3, 0)).lstrip(b"\0")
    return f"{fid.get(1, 0)},{key_cookie.hex()}"


def _grpc_reached(code) -> bool:
    """Did a call get as far as a gRPC server (any answer but 'could not connect')?"""
    import grpc

    return code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


# -- the ways in -----------------------------------------------------------------------------------
def test_filer_http_refuses_an_anonymous_upload(stack):
    key = f"{PREFIX}/filer-upload-{secrets.token_hex(4)}.txt"
    body, headers = _multipart("file", "x.txt", b"planted through the filer")

    status, answer = _http("POST", f"http://127.0.0.1:{_ports(stack)['filer']}/buckets/{BUCKET}/{key}", body, headers)

    assert status is None or status >= 400, (status, answer[:200])
    assert not _s3_has(stack, key)


def test_filer_http_refuses_an_anonymous_read_and_listing(stack):
    key, body = _put_object(stack, "filer-read")
    base = f"http://127.0.0.1:{_ports(stack)['filer']}/buckets/{BUCKET}"

    status, answer = _http("GET", f"{base}/{key}")
    assert status != 200 and body[:32] not in answer, (status, answer[:200])
    status, answer = _http("GET", f"{base}/{key}?metadata=true")
    assert status != 200 and b"chunks" not in answer, (status, answer[:200])
    status, answer = _http("GET", f"{base}/{PREFIX}/", headers={"Accept": "application/json"})
    assert key.rsplit("/", 1)[1].encode() not in answer, (status, answer[:200])


def test_master_http_hands_out_no_write_ticket(stack):
    ports = _ports(stack)
    status, answer = _http("GET", f"http://127.0.0.1:{ports['master']}/dir/assign")
    assert b'"fid"' not in answer, (status, answer[:300])
    status, answer = _http("GET", f"http://127.0.0.1:{ports['master']}/dir/lookup?volumeId=1")
    assert b'"locations"' not in answer, (status, answer[:300])


def test_volume_server_refuses_anonymous_read_overwrite_and_delete(stack):
    key, body = _put_object(stack, "volume")
    fid = _fid_of(stack, key)
    ports = _ports(stack)
    volume = f"http://127.0.0.1:{ports['volume']}/{fid}"

    status, answer = _http("GET", volume)
    assert body[:32] not in answer, (status, answer[:200])
    # The filer proxies a chunk read by file id, without checking the caller.
    status, answer = _http("GET", f"http://127.0.0.1:{ports['filer']}/?proxyChunkId={fid}")
    assert body[:32] not in answer, (status, answer[:200])

    upload, headers = _multipart("file", "x.bin", b"overwritten through the volume server")
    status, answer = _http("POST", volume, upload, headers)
    assert status is None or status >= 400, (status, answer[:200])
    status, answer = _http("DELETE", volume)
    assert status is None or status >= 400, (status, answer[:200])
    assert stack.get_object(BUCKET, key) == body


def test_filer_grpc_refuses_an_anonymous_lookup_and_create(stack):
    key, _ = _put_object(stack, "filer-grpc")
    code, answer = _lookup(stack, key)
    assert not _grpc_reached(code), (code, answer)

    planted = f"{PREFIX}/grpc-planted-{secrets.token_hex(4)}.txt"
    directory, _, name = f"/buckets/{BUCKET}/{planted}".rpartition("/")
    content = b"planted through filer gRPC"
    attributes = _field(1, len(content)) + _field(2, int(time.time())) + _field(3, 0o644) + _field(6, int(time.time()))
    entry = _field(1, name) + _field(4, attributes) + _field(9, content)
    code, answer = _grpc(_ports(stack)["filer_grpc"], "/filer_pb.SeaweedFiler/CreateEntry",
                         _field(1, directory) + _field(2, entry))
    assert not _grpc_reached(code), (code, answer)
    assert not _s3_has(stack, planted)


def test_master_grpc_refuses_an_anonymous_assign(stack):
    code, answer = _grpc(_ports(stack)["master_grpc"], "/master_pb.Seaweed/Assign", _field(1, 1))
    assert not _grpc_reached(code), (code, answer)


def test_s3_grpc_refuses_a_planted_identity(stack):
    import boto3
    import botocore.exceptions

    access_key, secret_key = f"INTRUDER{secrets.token_hex(6).upper()}", secrets.token_hex(20)
    credential = _field(1, access_key) + _field(2, secret_key) + _field(3, "Active")
    identity = _field(1, f"intruder-{access_key.lower()}") + _field(2, credential) + _field(3, "Admin")
    code, answer = _grpc(_ports(stack)["s3_grpc"], "/messaging_pb.SeaweedS3IamCache/PutIdentity", _field(1, identity))
    assert not _grpc_reached(code), (code, answer)

    intruder = boto3.client("s3", endpoint_url=stack.cfg.s3_url, region_name="us-east-1",
                            aws_access_key_id=access_key, aws_secret_access_key=secret_key)
    with pytest.raises(botocore.exceptions.ClientError):
        intruder.list_objects_v2(Bucket=BUCKET)


def test_every_port_but_the_gateways_refuses_plaintext(stack):
    """Whatever weed listens on: the plain-HTTP ports are known (and tested above); every other one
    (gRPC of master, volume, filer, S3 and admin, whatever a new version adds) wants TLS."""
    import psutil

    ports = _ports(stack)
    pid = _s3_service().proc.pid
    listening = {c.laddr.port for c in psutil.net_connections(kind="tcp")
                 if c.pid == pid and c.status == psutil.CONN_LISTEN}
    assert stack.cfg.s3_port in listening
    plain_http = {stack.cfg.s3_port, ports["master"], ports["volume"], ports["filer"], ports["admin"], ports["metrics"]}
    reached = {}
    for port in sorted(listening - plain_http):
        code, answer = _grpc(port, "/lockdown.Probe/Nothing")
        if _grpc_reached(code):
            reached[port] = (code, answer)
    assert not reached, f"plaintext gRPC reaches a server on {reached}"
    # Iceberg and Lance catalogs: not used by the project, not served.
    status, answer = _http("GET", f"http://127.0.0.1:{ports['iceberg']}/v1/config")
    assert status is None, (status, answer[:200])


def test_grpc_wants_a_certificate_of_the_stack(stack):
    """TLS alone is not enough: a client without the stack's certificate is refused, the owner's
    certificate gets through (the control that the ports are live gRPC servers)."""
    import grpc

    owner = _owner_credentials()
    assert owner is not None, "the stack has no gRPC certificates"
    ca = tomllib.loads((_s3_service().data_dir / "security.toml").read_text())["grpc"]["ca"]
    no_client_cert = grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
    for name in ("master_grpc", "volume_grpc", "filer_grpc", "s3_grpc"):
        port = _ports(stack)[name]
        code, answer = _grpc(port, "/lockdown.Probe/Nothing", credentials=owner)
        assert code == grpc.StatusCode.UNIMPLEMENTED, (name, code, answer)
        code, answer = _grpc(port, "/lockdown.Probe/Nothing", credentials=no_client_cert)
        assert not _grpc_reached(code), (name, code, answer)


def test_secrets_are_owner_only_and_off_the_command_line(stack):
    service = _s3_service()
    config = service.data_dir / "security.toml"
    assert config.exists()
    assert config.stat().st_mode & 0o077 == 0
    assert service.data_dir.stat().st_mode & 0o077 == 0
    parsed = tomllib.loads(config.read_text())
    keys = [parsed["jwt"]["signing"]["key"], parsed["jwt"]["signing"]["read"]["key"],
            parsed["jwt"]["filer_signing"]["key"], parsed["jwt"]["filer_signing"]["read"]["key"]]
    assert all(len(k) >= 32 for k in keys) and len(set(keys)) == 4
    key_file = Path(parsed["grpc"]["client"]["key"])
    assert key_file.stat().st_mode & 0o077 == 0
    cmdline = Path(f"/proc/{service.proc.pid}/cmdline").read_bytes()
    assert not any(k.encode() in cmdline for k in keys)
    assert b"PRIVATE KEY" not in cmdline


# -- the way that must keep working ----------------------------------------------------------------
def test_authenticated_s3_still_reads_writes_copies_and_deletes(stack):
    client = stack.s3()
    key, body = _put_object(stack, "roundtrip", size=300 * 1024)

    assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
    assert client.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == len(body)
    assert key in stack.list_keys(BUCKET, PREFIX)
    copy = f"{key}-copy"
    client.copy_object(Bucket=BUCKET, Key=copy, CopySource={"Bucket": BUCKET, "Key": key})
    assert client.get_object(Bucket=BUCKET, Key=copy)["Body"].read() == body
    ranged = client.get_object(Bucket=BUCKET, Key=key, Range="bytes=100-199")["Body"].read()
    assert ranged == body[100:200]
    client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": key}, {"Key": copy}]})
    assert not _s3_has(stack, key) and not _s3_has(stack, copy)


def test_authenticated_multipart_uploads_still_work(stack):
    client = stack.s3()
    key = f"{PREFIX}/multipart-{secrets.token_hex(4)}"
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(1024 * 1024 + 7)]
    upload = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    etags = [client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=n, Body=part)["ETag"]
             for n, part in enumerate(parts, start=1)]
    client.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]})

    assert stack.get_object(BUCKET, key) == b"".join(parts)
    client.delete_object(Bucket=BUCKET, Key=key)


def test_pyarrow_and_s3fs_still_stream_big_objects(stack):
    import s3fs

    from include.arrow_s3 import s3_filesystem

    data = os.urandom(11 * 1024 * 1024 + 3)
    fs = s3_filesystem()
    arrow_key = f"{PREFIX}/arrow-{secrets.token_hex(4)}.bin"
    with fs.open_output_stream(f"{BUCKET}/{arrow_key}") as out:
        for start in range(0, len(data), 1 << 20):
            out.write(data[start:start + (1 << 20)])
    with fs.open_input_file(f"{BUCKET}/{arrow_key}") as src:
        assert src.read() == data

    from tests.conftest import _credentials

    access_key, secret_key = _credentials(stack.cfg)
    sfs = s3fs.S3FileSystem(key=access_key, secret=secret_key, client_kwargs={"endpoint_url": stack.cfg.s3_url,
                                                                              "region_name": "us-east-1"})
    s3fs_key = f"{PREFIX}/s3fs-{secrets.token_hex(4)}.bin"
    with sfs.open(f"{BUCKET}/{s3fs_key}", "wb", block_size=5 * 1024 * 1024) as out:
        out.write(data)
    assert sfs.cat_file(f"{BUCKET}/{s3fs_key}") == data
    assert stack.get_object(BUCKET, arrow_key) == data
    stack.s3().delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": arrow_key}, {"Key": s3fs_key}]})


def test_admin_and_metrics_serve_no_bucket_data(stack):
    ports = _ports(stack)
    for path in ("/api/s3/buckets", f"/api/s3/buckets/{BUCKET}", "/files"):
        status, answer = _http("GET", f"http://127.0.0.1:{ports['admin']}{path}")
        assert status != 200, (path, status, answer[:200])
    status, answer = _http("GET", f"http://127.0.0.1:{ports['metrics']}/metrics")
    assert PREFIX.encode() not in answer, status


def test_a_store_made_before_the_lockdown_keeps_its_objects(tmp_path):
    """`make run` resumes `.local/s3`: a store an older checkout made (no security.toml, every API
    open, its own mini.options) starts locked down, with its objects, and again after a restart."""
    import boto3

    from devstack.services import S3Service

    class Unlocked(S3Service):
        """The command of the checkout before the lockdown."""

        def _write_security_config(self):
            pass

        def _check_locked_down(self):
            pass

        def command(self):
            (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc, iceberg, lance, admin,
             metrics) = self.internal_ports
            return [self.binary, "mini", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                    f"-master.port={master}", f"-master.port.grpc={master_grpc}", f"-volume.port={volume}",
                    f"-volume.port.grpc={volume_grpc}", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
                    f"-s3.port={self.port}", f"-s3.port.grpc={s3_grpc}", f"-s3.port.iceberg={iceberg}",
                    f"-s3.port.lance={lance}", f"-admin.port={admin}", "-admin.ui=false",
                    f"-s3.metricsPort={metrics}", "-webdav=false",
                    f"-filer.localSocket={self.data_dir / 'sock' / 'filer.sock'}",
                    f"-s3.localSocket={self.data_dir / 'sock' / 's3.sock'}", f"-bucket={BUCKET}"]

    from devstack.stack import standalone_s3_ports

    gateway, internal = standalone_s3_ports()
    ports = [gateway, *internal]
    keys = "resume-access-key", secrets.token_hex(16)

    def client():
        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{ports[0]}", region_name="us-east-1",
                            aws_access_key_id=keys[0], aws_secret_access_key=keys[1])

    old = Unlocked(tmp_path / "s3", tmp_path / "logs", ports[0], ports[1:], *keys, [BUCKET])
    old.start()
    try:
        body = os.urandom(9 * 1024 * 1024)
        client().put_object(Bucket=BUCKET, Key="before", Body=body)
    finally:
        old.stop()
    assert not (tmp_path / "s3" / "security.toml").exists()

    seen = []
    for _ in range(2):
        new = S3Service(tmp_path / "s3", tmp_path / "logs", ports[0], ports[1:], *keys, [BUCKET])
        new.start()  # fails (ServiceError) unless locked down
        try:
            assert client().get_object(Bucket=BUCKET, Key="before")["Body"].read() == body
            client().put_object(Bucket=BUCKET, Key=f"after-{len(seen)}", Body=b"x" * 100_000)
            seen.append((tmp_path / "s3" / "security.toml").read_text())
        finally:
            new.stop()
    assert seen[0] == seen[1], "the keys changed across a restart"


def test_weeds_hard_coded_tmp_sockets_are_owner_only_and_removed_on_stop(tmp_path):
    """`weed mini` puts one unix socket per gRPC port under /tmp whatever TMPDIR says, and never removes
    them: a running stack's are owner-only, a stopped or killed one's are gone."""
    import stat as stat_mod

    from devstack.services import S3Service
    from devstack.stack import standalone_s3_ports

    gateway, internal = standalone_s3_ports()
    ports = [gateway, *internal]
    service = S3Service(tmp_path / "s3", tmp_path / "logs", ports[0], ports[1:], "sock-access-key",
                        secrets.token_hex(16), [BUCKET])
    expected = service.grpc_sockets_in_tmp()

    started = time.time()
    service.start()
    try:
        def present() -> list[str]:
            # The sockets this weed made: one of its port numbers, and new (a dead socket of another
            # stack may carry one of these numbers for another part).
            return sorted(str(p) for p in Path("/tmp").glob("seaweedfs-*-grpc-*.sock")
                          if int(p.stem.rsplit("-", 1)[1]) in service.ports and p.lstat().st_mtime >= started - 1)

        deadline = time.monotonic() + 30
        while present() != sorted(map(str, expected)) and time.monotonic() < deadline:
            time.sleep(0.5)  # the admin server starts after the S3 gateway answers (start() returns)
        assert present() == sorted(map(str, expected)), "weed's /tmp socket names changed: update grpc_sockets_in_tmp"
        for path in expected:
            assert stat_mod.S_IMODE(path.lstat().st_mode) & 0o077 == 0, (path, oct(path.lstat().st_mode))
    finally:
        service.stop()
    assert [p for p in expected if p.exists()] == []

    service.start()
    service.kill_group()  # as the supervisor does with a dead or hung S3
    assert [p for p in expected if p.exists()] == []


def test_another_users_dead_socket_on_our_port_fails_the_start_at_once_naming_it(tmp_path, monkeypatch):
    """/tmp is sticky: a non-root stack cannot replace another user's dead weed socket, and weed would
    then fail its health checks a minute later with `bind: address already in use`. Checked as a
    non-root user (uid 1001) facing a socket of ours (root's here)."""
    import socket as socket_mod

    from devstack import services
    from devstack.services import S3Service, ServiceError
    from devstack.stack import standalone_s3_ports

    gateway, internal = standalone_s3_ports()
    ports = [gateway, *internal]
    service = S3Service(tmp_path / "s3", tmp_path / "logs", ports[0], ports[1:], "k", "s", [BUCKET])
    planted = service.grpc_sockets_in_tmp()[0]
    listener = socket_mod.socket(socket_mod.AF_UNIX)
    listener.bind(str(planted))
    listener.close()  # dead: the file stays, nothing listens
    try:
        monkeypatch.setattr(services.os, "geteuid", lambda: 1001)
        with pytest.raises(ServiceError, match=f"{planted} was left by a SeaweedFS of uid {os.getuid()}"):
            service.prepare()
    finally:
        planted.unlink(missing_ok=True)
