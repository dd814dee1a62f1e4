"""The Open-Meteo client against the stand-in: values, requests sent, time zones done on our side
(the API labels a whole answer with one offset), and one clear error per failure mode."""

import json
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from devstack.standins.open_meteo import temperature
from include.open_meteo import (
    OpenMeteoBadResponse,
    OpenMeteoError,
    OpenMeteoRejectedRequest,
    OpenMeteoUnavailable,
    fetch_daily_temperature_range,
    fetch_hourly_temperatures,
)


def _requests(stack) -> list[dict]:
    with urllib.request.urlopen(f"{stack.standin_url}/_standin/requests", timeout=5) as resp:
        return json.load(resp)["requests"]


NYC = (40.7143, -74.006)


def test_hourly_year_has_8760_new_york_hours_with_their_offsets(standin):
    hourly = fetch_hourly_temperatures(*NYC, "2025-01-01", "2025-12-31", "America/New_York")

    assert len(hourly["time"]) == len(hourly["time_utc"]) == len(hourly["temperature"]) == 8760
    assert hourly["time"][:2] == ["2025-01-01T00:00-05:00", "2025-01-01T01:00-05:00"]
    assert hourly["time_utc"][0] == "2025-01-01T05:00+00:00" and hourly["time"][-1] == "2025-12-31T23:00-05:00"
    assert all(isinstance(t, float) for t in hourly["temperature"])
    per_day = Counter(t[:10] for t in hourly["time"])
    assert per_day["2025-03-09"] == 23 and per_day["2025-11-02"] == 25 and per_day["2025-07-01"] == 24
    # The repeated hour of the fall-back night: two rows, told apart by their offsets.
    assert "2025-11-02T01:00-04:00" in hourly["time"] and "2025-11-02T01:00-05:00" in hourly["time"]
    assert "2025-03-09T02:00-05:00" not in hourly["time"]  # the skipped hour does not exist


def test_every_value_is_the_one_of_its_utc_hour(standin):
    """Independent of the client: the stand-in's climate at each UTC instant."""
    hourly = fetch_hourly_temperatures(*NYC, "2025-03-08", "2025-03-10", "America/New_York")

    for local, utc, value in zip(hourly["time"], hourly["time_utc"], hourly["temperature"], strict=True):
        moment = datetime.fromisoformat(utc)
        assert datetime.fromisoformat(local) == moment
        assert datetime.fromisoformat(local).utcoffset() == moment.astimezone(ZoneInfo("America/New_York")).utcoffset()
        assert value == temperature(*NYC, moment, "era5")


@pytest.mark.parametrize("today", ["2025-07-15", "2025-11-02", "2026-03-08", "2026-06-01"])
def test_the_answer_does_not_depend_on_the_day_it_is_fetched(standin, today):
    """Open-Meteo labels a whole answer with the offset of the day of the request (#1255): fetched in
    winter and in summer, the same local hour must still hold the same value."""
    standin.configure(open_meteo_today="2025-12-20")
    reference = fetch_hourly_temperatures(*NYC, "2025-06-30", "2025-07-01", "America/New_York")
    standin.configure(open_meteo_today=today)

    assert fetch_hourly_temperatures(*NYC, "2025-06-30", "2025-07-01", "America/New_York") == reference
    noon = reference["time"].index("2025-07-01T12:00-04:00")
    assert reference["temperature"][noon] == temperature(*NYC, datetime(2025, 7, 1, 16, tzinfo=UTC), "era5")


def test_requests_ask_for_gmt_over_the_utc_days_of_the_local_ones(standin):
    urllib.request.urlopen(urllib.request.Request(f"{standin.standin_url}/_standin/requests", method="DELETE"))
    fetch_hourly_temperatures(*NYC, "2025-02-01", "2025-02-02", "America/New_York")

    (request,) = _requests(standin)
    assert request["path"] == "/v1/archive"
    # New York's Feb 1-2 are 05:00 UTC Feb 1 to 05:00 UTC Feb 3.
    assert request["query"] == {"latitude": "40.7143", "longitude": "-74.006", "start_date": "2025-02-01",
                                "end_date": "2025-02-03", "hourly": "temperature_2m", "timezone": "GMT"}


def test_auto_resolves_the_place_s_zone(standin):
    assert fetch_hourly_temperatures(*NYC, "2025-07-01", "2025-07-01", "auto")["time"][0] == "2025-07-01T00:00-04:00"
    assert fetch_hourly_temperatures(*NYC, "2025-07-01", "2025-07-01", "GMT")["time"][0] == "2025-07-01T00:00+00:00"


def test_daily_range_is_per_new_york_day_from_hourly_utc_values(standin):
    daily = fetch_daily_temperature_range(*NYC, "2025-03-08", "2025-03-10", "America/New_York")

    assert daily["date"] == ["2025-03-08", "2025-03-09", "2025-03-10"]
    assert daily["hours"] == [24, 23, 24]
    assert daily["day_start"][1] == "2025-03-09T00:00-05:00" and daily["day_end"][1] == "2025-03-10T00:00-04:00"
    zone = ZoneInfo("America/New_York")
    for day, low, high in zip(daily["date"], daily["temperature_min"], daily["temperature_max"], strict=True):
        start = datetime.fromisoformat(day).replace(tzinfo=zone).astimezone(UTC)
        end = (datetime.fromisoformat(day) + timedelta(days=1)).replace(tzinfo=zone).astimezone(UTC)
        values = [temperature(*NYC, start + timedelta(hours=h), "best_match")
                  for h in range(int((end - start) / timedelta(hours=1)))]
        assert (low, high) == (min(values), max(values)), day


def test_an_answer_not_in_gmt_is_refused(standin, monkeypatch):
    """A proxy or API change that ignores timezone=GMT would silently shift every hour."""
    import include.open_meteo as client

    real = client._request_json
    monkeypatch.setattr(client, "_request_json", lambda *a, **k: {**real(*a, **k), "utc_offset_seconds": -18000})

    with pytest.raises(OpenMeteoBadResponse, match="utc_offset_seconds -18000 to a request for GMT"):
        fetch_hourly_temperatures(*NYC, "2025-01-01", "2025-01-02", "America/New_York")


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        ("http_400", OpenMeteoRejectedRequest, "HTTP 400: Parameter 'latitude' and 'longitude'"),
        ("http_429", OpenMeteoUnavailable, "HTTP 429: Minutely API request limit exceeded"),
        ("http_503", OpenMeteoUnavailable, "HTTP 503: The service is overloaded"),
        ("http_500", OpenMeteoUnavailable, "HTTP 500"),
        # The server's trouble, not the data's: retried (Open-Meteo's own mid-stream error is named).
        ("truncated", OpenMeteoUnavailable, "HTTP 200 but a JSON document cut short"),
        ("empty_body", OpenMeteoUnavailable, "HTTP 200 but an empty body"),
        ("streaming_error", OpenMeteoUnavailable,
         "failed mid-answer: 'Unexpected error while streaming data: timeoutReached'"),
        # A whole answer that is wrong: fails at once.
        ("not_json", OpenMeteoBadResponse, "returned malformed JSON: not JSON"),
        ("dropped", OpenMeteoUnavailable, "request to http://127.0.0.1:"),
        ("unequal_lengths", OpenMeteoBadResponse, "unequal length: 744 times but 743 temperature_2m values"),
        ("all_null", OpenMeteoBadResponse, "only null temperature_2m values (744 rows)"),
    ],
)
def test_each_failure_raises_an_error_naming_its_cause(standin, fault, error, message):
    standin.inject_fault("/v1/archive", fault)

    with pytest.raises(error) as raised:
        fetch_hourly_temperatures(40.7143, -74.006, "2025-01-01", "2025-01-31", "GMT")

    assert message in str(raised.value)
    assert isinstance(raised.value, OpenMeteoError)


def test_real_parameter_errors_come_back_with_the_apis_reason(standin):
    with pytest.raises(OpenMeteoRejectedRequest, match="End-date must be larger or equals than start-date"):
        fetch_hourly_temperatures(40.7, -74.0, "2025-02-01", "2025-01-01")
    with pytest.raises(OpenMeteoRejectedRequest, match="unknown time zone 'Mars/Olympus_Mons'"):
        fetch_hourly_temperatures(40.7, -74.0, "2025-01-01", "2025-01-02", "Mars/Olympus_Mons")


def test_unreachable_api_names_the_connection_target(monkeypatch):
    from devstack.services import free_port

    monkeypatch.setenv("AIRFLOW_CONN_OPEN_METEO_ARCHIVE", f"http://127.0.0.1:{free_port()}")

    with pytest.raises(OpenMeteoUnavailable, match=r"request to http://127\.0\.0\.1:\d+/v1/archive failed"):
        fetch_hourly_temperatures(40.7, -74.0, "2025-01-01", "2025-01-02")
