"""The Strava stand-in's real-world behaviour: upload lag, rate-limit windows and headers, and
tokens that survive a restart (as Strava's do) - plus what the client says when they do not."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devstack.services import free_port
from devstack.standins.strava import activity, listed_activities, start_of, uploaded_at

ROOT = Path(__file__).resolve().parents[2]


def test_no_activity_is_listed_before_it_ends_and_most_appear_within_the_hour():
    lags = [uploaded_at(i) - start_of(i) - timedelta(seconds=activity(i)["elapsed_time"]) for i in range(500)]

    assert min(lags) >= timedelta(minutes=2)
    assert sum(lag <= timedelta(minutes=30) for lag in lags) / len(lags) > 0.6
    assert timedelta(days=1) < max(lags) <= timedelta(days=4)  # a watch synced days later
    started = start_of(394)
    assert activity(394)["id"] not in {a["id"] for a in listed_activities(started + timedelta(hours=2))}
    assert activity(394)["id"] in {a["id"] for a in listed_activities(uploaded_at(394))}


def test_edits_and_deletions_after_upload():
    now = datetime(2025, 1, 1, tzinfo=UTC)
    target = activity(3)["id"]
    listed = {a["id"]: a for a in listed_activities(now, {"strava_activity_overrides": {str(target): {"name": "x"}},
                                                          "strava_deleted_ids": [activity(4)["id"]]})}
    assert listed[target]["name"] == "x" and activity(4)["id"] not in listed


def _server(state_dir: Path | None):
    port = free_port()
    args = [sys.executable, "-m", "devstack.standins", "--port", str(port)]
    if state_dir is not None:
        args += ["--state-dir", str(state_dir)]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/_standin/health", timeout=1).close()
            return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("stand-in did not start")


def _token(url: str) -> dict:
    body = urllib.parse.urlencode({"client_id": "offline-client", "client_secret": "offline-client-secret",
                                   "code": "offline-authorization-code", "grant_type": "authorization_code"}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{url}/oauth/token", data=body), timeout=5) as resp:
        return json.load(resp)


def _activities(url: str, access_token: str, **query) -> tuple[int, dict, object]:
    request = urllib.request.Request(f"{url}/api/v3/athlete/activities?{urllib.parse.urlencode(query)}",
                                     headers={"Authorization": f"Bearer {access_token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.load(err)


def _restart(process, state_dir):
    process.terminate()
    process.wait(timeout=10)
    return _server(state_dir)


def test_issued_tokens_survive_a_restart_with_a_state_folder(tmp_path):
    process, url = _server(tmp_path)
    try:
        token = _token(url)
        process, url = _restart(process, tmp_path)
        status, _, _ = _activities(url, token["access_token"], per_page=1)
        assert status == 200
        assert (tmp_path / "strava" / "tokens.json").stat().st_mode & 0o777 == 0o600
    finally:
        process.kill()


def test_rate_limit_headers_and_429_as_documented(tmp_path):
    process, url = _server(None)
    try:
        token = _token(url)["access_token"]
        config = json.dumps({"strava_read_limit": "2,1000"}).encode()
        urllib.request.urlopen(urllib.request.Request(f"{url}/_standin/config", data=config), timeout=5).close()
        statuses = []
        for _ in range(3):
            status, headers, body = _activities(url, token, per_page=1)
            statuses.append(status)
        assert statuses == [200, 200, 429]
        assert headers["X-ReadRateLimit-Limit"] == "2,1000" and headers["X-ReadRateLimit-Usage"] == "3,3"
        assert headers["X-RateLimit-Limit"] == "200,2000"
        assert body["message"] == "Rate Limit Exceeded"
    finally:
        process.kill()


class _TokenStore:
    """The token store's interface (Redis get/set), in memory: the stand-in is what is tested."""

    def __init__(self):
        self.values = {}

    def get(self, key):
        return self.values.get(key)

    def set(self, key, value):
        self.values[key] = value


def test_a_token_the_server_forgot_gets_one_refresh_and_an_error_that_says_what_happened():
    """The stand-in without a state folder forgets its tokens on a restart (as it did under make run):
    Redis still holds a token that has not expired. The client refreshes once; when that fails too,
    it says so - not "after refresh" when no refresh happened."""
    from include.strava import TOKEN_KEY, StravaRejected, fetch_activities

    process, url = _server(None)
    try:
        store = _TokenStore()
        store.set(TOKEN_KEY, json.dumps(_token(url)))
        process, url = _restart(process, None)

        with pytest.raises(StravaRejected) as raised:
            fetch_activities(0, 2_000_000_000, client_id="offline-client", client_secret="offline-client-secret",
                             base_url=url, redis_client=store)

        message = str(raised.value)
        assert "rejected the stored access token (401 Authorization Error" in message
        assert "before it expired, and refreshing it failed too" in message and "make strava-token" in message
    finally:
        process.kill()


def test_a_revoked_access_token_is_refreshed_and_the_run_goes_on(tmp_path):
    """401 on an unexpired token while the refresh token still works: one refresh, then success,
    and the new token is in the store."""
    from include.strava import TOKEN_KEY, fetch_activities

    process, url = _server(tmp_path)
    try:
        store = _TokenStore()
        token = _token(url)
        store.set(TOKEN_KEY, json.dumps({**token, "access_token": "revoked-but-not-expired-0000"}))

        activities = fetch_activities(0, 1_720_000_000, client_id="offline-client",
                                      client_secret="offline-client-secret", base_url=url, redis_client=store)

        assert len(activities) > 100
        assert json.loads(store.get(TOKEN_KEY))["refresh_token"] != token["refresh_token"]
    finally:
        process.kill()
