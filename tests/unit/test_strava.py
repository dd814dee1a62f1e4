"""include/strava.py without a scheduler: validation, interval bounds, transport rule."""

import os
from datetime import UTC, datetime

import pytest

from devstack.standins.strava import activity
from include.strava import StravaRejected, _allow_plain_http_to_local_standins, sync_window, validate_activities


def test_valid_activities_keep_floats_and_null_missing_optionals():
    run, ride = activity(0), activity(1)  # a run without power, a ride without cadence
    parsed = validate_activities([run, ride])

    assert parsed[0].id == run["id"] > 2**32
    assert parsed[0].average_speed == run["average_speed"] and isinstance(parsed[0].average_speed, float)
    assert parsed[0].weighted_average_watts is None and parsed[0].kilojoules is None
    assert parsed[1].average_cadence is None and parsed[1].kilojoules == ride["kilojoules"]
    assert parsed[1].start_date.tzinfo is not None


def test_every_invalid_record_is_named_by_id_and_field():
    good, bad_a, bad_b = activity(2), {**activity(3), "distance": "far"}, {**activity(4)}
    del bad_b["start_date"]

    with pytest.raises(StravaRejected) as raised:
        validate_activities([good, bad_a, bad_b, "not a record"])

    message = str(raised.value)
    assert message.startswith("3 of 4 Strava activities are invalid, nothing was loaded")
    assert f"activity {bad_a['id']}: distance: Input should be a valid number" in message
    assert f"activity {bad_b['id']}: start_date: Field required" in message
    assert "activity #3" in message


def test_sync_window_reads_back_a_week_from_the_watermark_up_to_the_interval_end():
    end = datetime(2025, 6, 1, 11, tzinfo=UTC)
    week = 7 * 86400

    assert sync_window(end, datetime(2025, 6, 1, 10, tzinfo=UTC)) == (1748772000 - week, 1748775600)
    # A pause: the watermark is days old - the window reaches back from it, not from the interval.
    assert sync_window(end, datetime(2025, 5, 28, 10, tzinfo=UTC))[0] == 1748426400 - week
    # Re-running an old run after later ones: never a window that ends before it starts.
    assert sync_window(end, datetime(2025, 6, 9, tzinfo=UTC)) == (1748775600 - week, 1748775600)


def test_sync_window_reads_everything_first_on_the_daily_run_and_on_request():
    end = datetime(2025, 6, 1, 11, tzinfo=UTC)
    watermark = datetime(2025, 6, 1, 10, tzinfo=UTC)

    assert sync_window(end, None) == (0, 1748775600)  # first load
    assert sync_window(end, watermark, full_history=True) == (0, 1748775600)
    assert sync_window(datetime(2025, 6, 2, 0, tzinfo=UTC), watermark)[0] == 0  # the run ending at 00:00 UTC


def test_tokens_never_travel_over_plain_http_beyond_loopback(monkeypatch):
    monkeypatch.delenv("OAUTH_PLAIN_HTTP_HOSTS", raising=False)
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT", raising=False)
    _allow_plain_http_to_local_standins("https://www.strava.com")
    with pytest.raises(StravaRejected, match="OAuth tokens travel only over https"):
        _allow_plain_http_to_local_standins("http://strava.example.com")
    _allow_plain_http_to_local_standins("http://127.0.0.1:8765")
    assert os.environ["OAUTHLIB_INSECURE_TRANSPORT"] == "1"


def test_plain_http_only_to_the_hosts_named_for_the_standins(monkeypatch):
    """.env.offline names the compose service of the stand-ins; no other host gets plain http."""
    monkeypatch.setenv("OAUTH_PLAIN_HTTP_HOSTS", "api-standins")
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT", raising=False)
    with pytest.raises(StravaRejected, match="OAuth tokens travel only over https"):
        _allow_plain_http_to_local_standins("http://api-standins.evil.example:8765")
    assert "OAUTHLIB_INSECURE_TRANSPORT" not in os.environ
    _allow_plain_http_to_local_standins("http://api-standins:8765")
    assert os.environ["OAUTHLIB_INSECURE_TRANSPORT"] == "1"


@pytest.mark.parametrize(("client_id", "secret", "named"), [
    ("", "s3cret-value", "STRAVA_CLIENT not set"),
    ("12345", "", "STRAVA_CLIENT_SECRET not set"),
    ("REPLACE_ME_strava_client_id", "  ", "STRAVA_CLIENT and STRAVA_CLIENT_SECRET not set"),
])
def test_missing_app_credentials_are_named_before_any_call(client_id, secret, named):
    from include.strava import fetch_activities

    class NoRedis:
        def get(self, key):
            raise AssertionError("must fail before reading the token")

    with pytest.raises(StravaRejected, match=named) as raised:
        fetch_activities(0, 1, client_id=client_id, client_secret=secret, base_url="https://www.strava.com",
                         redis_client=NoRedis())
    assert "AIRFLOW_VAR_STRAVA_CLIENT" in str(raised.value)
