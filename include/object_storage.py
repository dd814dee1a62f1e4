"""Objects on S3 through Airflow's object storage (ObjectStoragePath), bounded in time.

ObjectStoragePath("s3://<conn_id>@bucket/key") goes through the Amazon provider's filesystem
(airflow/providers/amazon/aws/fs/s3.py, get_fs) to s3fs, aiobotocore and aiohttp. The connection's
extra `config_kwargs` (connect_timeout, read_timeout, retries) do reach aiohttp - as
ClientTimeout(sock_connect, sock_read) - yet a hung S3 (a stopped process whose kernel still accepts
connections) held a write for as long as it stayed hung, and a read for minutes:

- botocore turns every PutObject/UploadPart body into a file (handlers.convert_body_to_file_like_object)
  and then asks for `Expect: 100-continue` (handlers.add_expect_header). aiohttp awaits that
  `100 Continue` with no timeout at all (client_reqrep.py, ClientRequest.write_bytes: `await
  self._continue`), and arms sock_read only once the body is out (ResponseHandler.start_timeout).
- aiohttp has no write timeout either: a body larger than the socket buffers waits in drain() forever.
- s3fs retries each call 5 times (S3FileSystem.retries, core.py _error_wrapper) on top of the
  connection's botocore attempts: a read that times out took 5 x 3 x read_timeout and more.

`bounded()` closes the three gaps on the filesystem ObjectStoragePath uses (the one Airflow caches per
connection; the project's XCom backend, include/xcom_backend.py, bounds it before each S3 call): the
body goes out at once (no 100-continue), the kernel drops a connection on which nothing it sent is
acknowledged for about read_timeout (TCP_USER_TIMEOUT, Linux; an upload that keeps moving is never cut, however long it
takes), and s3fs makes one attempt, the connection's `retries` being the only retry policy. A call to
a hung S3 then fails after about attempts x read_timeout, plus botocore's backoff: ~32 s with
aws_default (botocore's `max_attempts: 2` counts retries: 3 attempts).
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from functools import partial

from aiobotocore.httpsession import AIOHTTPSession
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.exceptions import HTTPClientError

S3_CONN_ID = "aws_default"
_BOUNDED = "_project_bounded_in_time"
_lock = threading.Lock()


class S3Unavailable(ConnectionError):
    """S3 did not answer (timed out, refused or dropped the connection): worth a retry of the task."""


class NoContinueAIOHTTPSession(AIOHTTPSession):
    """aiobotocore's aiohttp session, sending a request body without waiting for `100 Continue`
    (which aiohttp would wait for without a timeout). botocore's own urllib3 session waits at most
    one second for it before sending anyway; the server's answer is the same either way."""

    async def send(self, request):
        request.headers.pop("Expect", None)
        return await super().send(request)


def _socket_with_user_timeout(timeout_ms: int, addr_info) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)
    return sock


def bounded(fs):
    """The s3fs filesystem made to fail in bounded time (see the module docstring); idempotent."""
    if getattr(fs, _BOUNDED, False):
        return fs
    with _lock:
        if getattr(fs, _BOUNDED, False):
            return fs
        config = dict(fs.config_kwargs)  # a copy: the provider hands over the connection's own dict
        config["http_session_cls"] = NoContinueAIOHTTPSession
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            read_timeout = float(config.get("read_timeout") or fs.read_timeout)
            # Half: the kernel checks a full window only when it probes it (backing off from 0.2 s, doubling),
            # so it gives up between one and two user timeouts later - measured 10.6 s for 5 s, 21 s for 10 s.
            config["connector_args"] = {
                **(config.get("connector_args") or {}),
                "socket_factory": partial(_socket_with_user_timeout, int(read_timeout * 1000 / 2)),
            }
        fs.config_kwargs = config
        fs.retries = 1
        if getattr(fs, "_s3", None) is not None:  # a client made with the old config: make a new one
            fs.connect(refresh=True)
        setattr(fs, _BOUNDED, True)
    return fs


def s3_path(bucket: str, key: str, conn_id: str = S3_CONN_ID):
    """ObjectStoragePath of s3://bucket/key through connection conn_id, bounded in time."""
    from airflow.sdk import ObjectStoragePath  # noqa: PLC0415

    path = ObjectStoragePath(f"s3://{conn_id}@{bucket}/{key}")
    bounded(path.fs)
    return path


@contextmanager
def naming_s3(doing: str, path, bucket: str, key: str, conn_id: str):
    started = time.monotonic()
    try:
        yield
    except (HTTPClientError, BotocoreConnectionError, TimeoutError, ConnectionError) as exc:
        if isinstance(exc, S3Unavailable):
            raise
        endpoint = getattr(path.fs, "endpoint_url", None) or "AWS"
        underlying = getattr(exc, "kwargs", {}).get("error")  # botocore's errors keep aiohttp's
        raise S3Unavailable(
            f"S3 (connection {conn_id} at {endpoint}) failed {doing} s3://{bucket}/{key} after "
            f"{time.monotonic() - started:.0f} s: {exc}" + (f" ({underlying})" if underlying else "")
        ) from exc


def write_object(data: bytes | str, bucket: str, key: str, conn_id: str = S3_CONN_ID) -> str:
    """One PUT of the whole body (text as ObjectStoragePath.write_text writes it); returns s3://bucket/key."""
    path = s3_path(bucket, key, conn_id)
    with naming_s3("writing", path, bucket, key, conn_id):
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
    return f"s3://{bucket}/{key}"


def read_text(bucket: str, key: str, conn_id: str = S3_CONN_ID) -> str:
    path = s3_path(bucket, key, conn_id)
    with naming_s3("reading", path, bucket, key, conn_id):
        return path.read_text()
