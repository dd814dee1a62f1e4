"""Servers that stop answering: a paused (SIGSTOP) Redis or S3 fails the call within a bounded
time - instead of holding a worker slot for minutes or forever - with a message that names the
service. (Not yet bounded: s3fs's PUT to a paused S3 waits past its read timeout; see README.)"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager

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
