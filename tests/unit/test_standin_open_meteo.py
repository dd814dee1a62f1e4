"""The stand-in reproduces Open-Meteo's layout, parameter checks and determinism."""

import json
import urllib.error
import urllib.request
from urllib.parse import urlencode


def _get(stack, path, **params):
    url = f"{stack.standin_url}{path}?{urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


NYC = {"latitude": 40.7143, "longitude": -74.006}


def test_archive_response_layout(standin):
    status, body = _get(standin, "/v1/archive", **NYC, start_date="2025-01-01", end_date="2025-01-02",
                        hourly="temperature_2m", timezone="auto")

    assert status == 200
    assert list(body) == ["latitude", "longitude", "generationtime_ms", "utc_offset_seconds", "timezone",
                          "timezone_abbreviation", "elevation", "hourly_units", "hourly"]
    assert body["timezone"] == "America/New_York" and body["utc_offset_seconds"] == -18000
    assert (body["latitude"], body["longitude"]) != (40.7143, -74.006)  # grid cell, not the request
    assert body["hourly_units"] == {"time": "iso8601", "temperature_2m": "°C"}
    assert len(body["hourly"]["time"]) == 48 and body["hourly"]["time"][-1] == "2025-01-02T23:00"


def test_same_request_same_answer(standin):
    args = dict(**NYC, start_date="2024-02-01", end_date="2024-03-31", hourly="temperature_2m")
    assert _get(standin, "/v1/archive", **args) == _get(standin, "/v1/archive", **args)


def test_leap_year_and_dates_are_honoured(standin):
    _, body = _get(standin, "/v1/archive", **NYC, start_date="2024-01-01", end_date="2024-12-31",
                   hourly="temperature_2m")
    assert len(body["hourly"]["time"]) == 366 * 24


def test_forecast_daily_needs_timezone_and_has_min_below_max(standin):
    status, body = _get(standin, "/v1/forecast", **NYC, start_date="2025-01-01", end_date="2025-01-03",
                        daily="temperature_2m_max,temperature_2m_min")
    assert status == 400 and body["error"] is True

    status, body = _get(standin, "/v1/forecast", **NYC, start_date="2025-01-01", end_date="2025-01-03",
                        daily="temperature_2m_max,temperature_2m_min", timezone="America/New_York")
    assert status == 200
    assert body["daily"]["time"] == ["2025-01-01", "2025-01-02", "2025-01-03"]
    assert all(a > b for a, b in zip(body["daily"]["temperature_2m_max"], body["daily"]["temperature_2m_min"],
                                     strict=True))


def test_parameter_errors(standin):
    cases = [
        (dict(start_date="2025-02-01", end_date="2025-01-01"), "End-date must be larger or equals than start-date"),
        (dict(start_date="2025-01-01", end_date="2025-01-02", timezone="Nowhere/Land"), "Invalid timezone"),
        (dict(start_date="1900-01-01", end_date="1900-01-02"), "out of allowed range"),
        (dict(start_date="2025-01-01", end_date="2025-01-02", hourly="snowfall_42"), "invalid String value"),
    ]
    for params, reason in cases:
        status, body = _get(standin, "/v1/archive", **NYC, **{"hourly": "temperature_2m", **params})
        assert status == 400 and body["error"] is True and reason in body["reason"], (params, body)


def test_latitude_out_of_range(standin):
    status, body = _get(standin, "/v1/archive", latitude=91, longitude=0, start_date="2025-01-01",
                        end_date="2025-01-01", hourly="temperature_2m")
    assert status == 400 and body["reason"].startswith("Latitude must be in range of -90 to 90")


def test_forecast_history_starts_in_2022(standin):
    status, body = _get(standin, "/v1/forecast", **NYC, start_date="2021-06-01", end_date="2021-06-02",
                        daily="temperature_2m_max", timezone="GMT")
    assert status == 400 and "out of allowed range from 2022-01-01" in body["reason"]
