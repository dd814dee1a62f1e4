"""The Open-Meteo client against the stand-in: values, requests sent, and one clear error per
failure mode."""

import json
import urllib.request

import pytest

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


def test_hourly_year_has_8760_local_rows(standin):
    hourly = fetch_hourly_temperatures(40.7143, -74.006, "2025-01-01", "2025-12-31", "auto")

    assert len(hourly["time"]) == len(hourly["temperature"]) == 8760
    assert hourly["time"][:2] == ["2025-01-01T00:00", "2025-01-01T01:00"]
    assert all(isinstance(t, float) for t in hourly["temperature"])


def test_request_carries_place_dates_variable_and_timezone(standin):
    urllib.request.urlopen(urllib.request.Request(f"{standin.standin_url}/_standin/requests", method="DELETE"))
    fetch_hourly_temperatures(40.7143, -74.006, "2025-02-01", "2025-02-02", "America/New_York")

    (request,) = _requests(standin)
    assert request["path"] == "/v1/archive"
    assert request["query"] == {"latitude": "40.7143", "longitude": "-74.006", "start_date": "2025-02-01",
                                "end_date": "2025-02-02", "hourly": "temperature_2m",
                                "timezone": "America/New_York"}


def test_daily_range_from_historical_forecast(standin):
    daily = fetch_daily_temperature_range(40.7143, -74.006, "2025-01-01", "2025-01-07", "America/New_York")

    assert daily["date"] == [f"2025-01-0{d}" for d in range(1, 8)]
    assert all(lo < hi for lo, hi in zip(daily["temperature_min"], daily["temperature_max"], strict=True))


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        ("http_400", OpenMeteoRejectedRequest, "HTTP 400: Parameter 'latitude' and 'longitude'"),
        ("http_429", OpenMeteoUnavailable, "HTTP 429: Minutely API request limit exceeded"),
        ("http_503", OpenMeteoUnavailable, "HTTP 503: The service is overloaded"),
        ("http_500", OpenMeteoUnavailable, "HTTP 500"),
        ("truncated", OpenMeteoBadResponse, "malformed JSON"),
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
    with pytest.raises(OpenMeteoRejectedRequest, match="Invalid timezone"):
        fetch_hourly_temperatures(40.7, -74.0, "2025-01-01", "2025-01-02", "Mars/Olympus_Mons")


def test_unreachable_api_names_the_connection_target(monkeypatch):
    from devstack.services import free_port

    monkeypatch.setenv("AIRFLOW_CONN_OPEN_METEO_ARCHIVE", f"http://127.0.0.1:{free_port()}")

    with pytest.raises(OpenMeteoUnavailable, match=r"request to http://127\.0\.0\.1:\d+/v1/archive failed"):
        fetch_hourly_temperatures(40.7, -74.0, "2025-01-01", "2025-01-02")
