"""Servers that stop answering: a paused (SIGSTOP) Redis or S3 fails the call within a bounded
time - instead of holding a worker slot for minutes or forever - with a message that names the
service (and for S3 the object). Pyarrow's reads, and object storage (ObjectStoragePath, through s3fs)
writes small and large and reads, all fail within about a minute - include/object_storage.py says why
s3fs needed help - while an upload slower than the read timeout, but moving, still completes. Each S3
call runs under a guard thread, so a regression fails the test instead of hanging the suite."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest


@contextmanager
def _paused(name: str):
    from tests.conftest import _STACK

    (service,) = [s for s in _STACK["services"] if s.name == name]
    os.kill(service.proc.pid, signal.SIGSTOP)
    try:
        yield service
    finally:
        os.kill(service.proc.pid, signal.SIGCONT)


def test_a_paused_redis_fails_the_token_read_in_seconds_naming_redis(stack):
    from include.strava import StravaRetryable, load_token, redis_client

    client = redis_client()
    with _paused("redis"), pytest.raises(StravaRetryable) as raised:
        started = time.monotonic()
        load_token(client)
    elapsed = time.monotonic() - started

    assert elapsed < 20, elapsed
    assert "Redis (connection redis_default at 127.0.0.1:" in str(raised.value)
    assert "reading the token (key STRAVA_TOKEN)" in str(raised.value)


def test_a_paused_s3_fails_a_bulk_read_in_bounded_time(stack):
    from include.arrow_s3 import s3_filesystem

    fs = s3_filesystem()
    with _paused("s3"), pytest.raises(OSError) as raised:
        started = time.monotonic()
        fs.get_file_info("nyc-tlc/raw/does-not-matter.csv.gz")
    elapsed = time.monotonic() - started

    assert elapsed < 150, elapsed
    assert "timeout" in str(raised.value).lower() or "timed out" in str(raised.value).lower(), repr(raised.value)



def _within(seconds: float, call):
    """(elapsed, exception) of call(), run in a thread. A call still running after `seconds` fails
    the test instead of hanging the suite (the thread ends by itself once the server resumes)."""
    outcome = {}

    def run():
        started = time.monotonic()
        try:
            call()
        except BaseException as exc:  # the test judges it
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True, name="s3-call-under-test")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"the S3 call still hangs after {seconds:.0f} s (guard)", pytrace=False)
    return outcome["elapsed"], outcome.get("error")


def _run(*moment) -> SimpleNamespace:
    return SimpleNamespace(logical_date=datetime(*moment, tzinfo=UTC), run_after=None, run_id="faults")


# aws_default: connect_timeout 5 s, read_timeout 10 s, 2 attempts - about 25 s for a call to a hung S3.
BOUND_S = 60


def test_a_paused_s3_fails_an_object_storage_write_in_bounded_time_naming_the_key(stack):
    from include.strava import write_raw_activities

    with _paused("s3"):
        elapsed, error = _within(120, lambda: write_raw_activities([{"id": 1}], _run(2031, 5, 6, 7, 8, 9)))

    assert error is not None, f"the write succeeded against a paused S3 in {elapsed:.0f} s"
    assert elapsed < BOUND_S, (elapsed, error)
    assert "S3 (connection aws_default at http://127.0.0.1:" in str(error), repr(error)
    assert "writing s3://lifedata/stravaact/20310506T070809.json" in str(error), repr(error)


def test_a_paused_s3_fails_a_large_object_storage_write_in_bounded_time(stack):
    """20 MB fills the socket buffers of a server that does not read: the write stalls, not the answer."""
    from include.object_storage import write_object

    data = os.urandom(20 << 20)
    with _paused("s3"):
        elapsed, error = _within(120, lambda: write_object(data, "lifedata", "faults/large-paused.bin"))

    assert error is not None, f"the write succeeded against a paused S3 in {elapsed:.0f} s"
    assert elapsed < BOUND_S, (elapsed, error)
    assert "writing s3://lifedata/faults/large-paused.bin" in str(error), repr(error)


def test_a_paused_s3_fails_an_object_storage_read_in_bounded_time_naming_the_key(stack):
    from include.strava import read_raw_activities, write_raw_activities

    key = write_raw_activities([{"id": 2}], _run(2031, 5, 7))
    with _paused("s3"):
        elapsed, error = _within(120, lambda: read_raw_activities(key))

    assert error is not None, f"the read succeeded against a paused S3 in {elapsed:.0f} s"
    assert elapsed < BOUND_S, (elapsed, error)
    assert f"reading s3://lifedata/{key}" in str(error), repr(error)
    assert read_raw_activities(key) == [{"id": 2}]  # and S3, once back, answers on the same filesystem


def _slow_proxy(upstream: tuple[str, int], bytes_per_s: int) -> tuple[str, int]:
    """A TCP proxy that reads what the client sends at bytes_per_s (a slow uplink) and passes the
    answers back at full speed. Its threads end with their connections."""
    listener = socket.create_server(("127.0.0.1", 0))

    def pump(src, dst, rate):
        try:
            while chunk := src.recv(16384):
                dst.sendall(chunk)
                if rate:
                    time.sleep(len(chunk) / rate)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def serve():
        while True:
            client, _ = listener.accept()
            server = socket.create_connection(upstream)
            threading.Thread(target=pump, args=(client, server, bytes_per_s), daemon=True).start()
            threading.Thread(target=pump, args=(server, client, None), daemon=True).start()

    threading.Thread(target=serve, daemon=True, name="slow-s3-proxy").start()
    return listener.getsockname()[:2]


def test_a_large_object_storage_write_slower_than_the_read_timeout_is_not_cut_short(stack, monkeypatch):
    """The bound is on silence, not on duration: 20 MB through a ~1 MB/s uplink takes twice the
    connection's read_timeout and still lands whole."""
    from urllib.parse import urlsplit

    from include.object_storage import write_object

    conn = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
    s3 = urlsplit(conn["extra"]["endpoint_url"])
    host, port = _slow_proxy((s3.hostname, s3.port), bytes_per_s=1 << 20)
    conn["extra"] = {**conn["extra"], "endpoint_url": f"http://{host}:{port}"}
    monkeypatch.setenv("AIRFLOW_CONN_SLOW_S3", json.dumps(conn))
    data = os.urandom(20 << 20)

    elapsed, error = _within(120, lambda: write_object(data, "lifedata", "faults/large-slow.bin", conn_id="slow_s3"))

    assert error is None, repr(error)
    assert elapsed > 1.5 * conn["extra"]["config_kwargs"]["read_timeout"], elapsed
    assert stack.get_object("lifedata", "faults/large-slow.bin") == data


@pytest.fixture
def fresh_xcom_backend(monkeypatch):
    """The configured XCom backend as a new task process has it: no S3 filesystem made yet (the tests
    above bounded the cached one for this process), the configuration's threshold and path."""
    from airflow.providers.common.io.xcom import backend as provider_backend
    from airflow.sdk.execution_time.xcom import resolve_xcom_backend
    from airflow.sdk.io import store

    monkeypatch.setattr(store, "_STORE_CACHE", {})
    for cached in (provider_backend._get_base_path, provider_backend._get_threshold,
                   provider_backend._get_compression):
        cached.cache_clear()
    yield resolve_xcom_backend()
    for cached in (provider_backend._get_base_path, provider_backend._get_threshold,
                   provider_backend._get_compression):
        cached.cache_clear()


def test_the_configured_xcom_backend_is_the_projects_bounded_one(fresh_xcom_backend):
    from include.xcom_backend import BoundedXComObjectStorageBackend

    assert fresh_xcom_backend is BoundedXComObjectStorageBackend


def test_a_paused_s3_fails_a_large_xcom_push_in_bounded_time_naming_the_object(stack, fresh_xcom_backend):
    """A task whose only S3 call is its XCom push (the weather API's extract) on a fresh process: the
    common.io provider's backend alone waits on a hung S3 for as long as it is hung (100-continue)."""
    value = {"hourly": list(range(40_000))}  # ~270 kB of JSON: above the 64 kB threshold, to S3

    with _paused("s3"):
        elapsed, error = _within(120, lambda: fresh_xcom_backend.serialize_value(
            value, key="return_value", task_id="extract", dag_id="faults", run_id="xcom_paused"))

    assert error is not None, f"the XCom push succeeded against a paused S3 in {elapsed:.0f} s"
    assert elapsed < BOUND_S, (elapsed, error)
    assert "S3 (connection aws_default at http://127.0.0.1:" in str(error), repr(error)
    assert "writing an XCom under s3://airflow-xcom/xcom/faults/xcom_paused/extract" in str(error), repr(error)


def test_a_paused_s3_fails_a_large_xcom_pull_in_bounded_time_and_s3_back_serves_it(stack, fresh_xcom_backend):
    value = {"hourly": list(range(40_000))}
    stored = fresh_xcom_backend.serialize_value(value, key="return_value", task_id="extract",
                                                dag_id="faults", run_id="xcom_pull")
    assert "s3://" in str(stored) and "airflow-xcom/xcom/faults/xcom_pull/extract/" in str(stored), stored

    with _paused("s3"):
        elapsed, error = _within(120, lambda: fresh_xcom_backend.deserialize_value(SimpleNamespace(value=stored)))

    assert error is not None, f"the XCom pull succeeded against a paused S3 in {elapsed:.0f} s"
    assert elapsed < BOUND_S, (elapsed, error)
    assert "reading the XCom s3://airflow-xcom/xcom/faults/xcom_pull/extract/" in str(error), repr(error)
    assert fresh_xcom_backend.deserialize_value(SimpleNamespace(value=stored)) == value


def test_a_small_xcom_stays_in_the_database_without_an_s3_client(stack, fresh_xcom_backend):
    from airflow.sdk.io import store

    stored = fresh_xcom_backend.serialize_value({"rate": 0.92}, key="return_value", task_id="t",
                                                dag_id="faults", run_id="small")

    assert store._STORE_CACHE == {}, "pushing a small XCom made an S3 filesystem"
    assert fresh_xcom_backend.deserialize_value(SimpleNamespace(value=stored)) == {"rate": 0.92}
