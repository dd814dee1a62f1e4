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
    standin.configure(open_meteo_today="2025-12-01")
    status, body = _get(standin, "/v1/archive", **NYC, start_date="2025-01-01", end_date="2025-01-02",
                        hourly="temperature_2m", timezone="auto")

    assert status == 200
    assert list(body) == ["latitude", "longitude", "generationtime_ms", "utc_offset_seconds", "timezone",
                          "timezone_abbreviation", "elevation", "hourly_units", "hourly"]
    assert body["timezone"] == "America/New_York" and body["utc_offset_seconds"] == -18000
    assert body["timezone_abbreviation"] == "GMT-5"
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


def _hourly(standin, today: str, timezone: str, day: str = "2025-07-01") -> dict:
    standin.configure(open_meteo_today=today)
    status, body = _get(standin, "/v1/archive", **NYC, start_date=day, end_date=day, hourly="temperature_2m",
                        timezone=timezone)
    assert status == 200, body
    return body


def test_one_offset_for_the_whole_answer_the_one_of_the_day_of_the_request(standin):
    """open-meteo/open-meteo #1255, #1764: a zone's offset is the one valid when the request is
    made; no DST inside a series. July fetched in winter is labelled at UTC-5."""
    gmt = _hourly(standin, "2025-12-15", "GMT")
    by_utc_hour = dict(zip(gmt["hourly"]["time"], gmt["hourly"]["temperature_2m"], strict=True))
    winter = _hourly(standin, "2025-12-15", "America/New_York")
    summer = _hourly(standin, "2025-07-15", "America/New_York")

    assert (winter["utc_offset_seconds"], winter["timezone_abbreviation"]) == (-18000, "GMT-5")
    assert (summer["utc_offset_seconds"], summer["timezone_abbreviation"]) == (-14400, "GMT-4")
    assert gmt["utc_offset_seconds"] == 0 and gmt["timezone"] == "GMT"
    assert winter["hourly"]["time"] == summer["hourly"]["time"]  # the same labels ...
    noon = winter["hourly"]["time"].index("2025-07-01T12:00")
    # ... standing for different instants: 17:00 UTC fetched in winter, 16:00 UTC in summer.
    assert winter["hourly"]["temperature_2m"][noon] == by_utc_hour["2025-07-01T17:00"]
    assert summer["hourly"]["temperature_2m"][noon] == by_utc_hour["2025-07-01T16:00"]
    assert len(winter["hourly"]["time"]) == 24  # a DST day too: always 24 labels a day


def test_daily_aggregates_are_cut_at_the_fixed_offset(standin):
    standin.configure(open_meteo_today="2025-12-15")
    _, daily = _get(standin, "/v1/forecast", **NYC, start_date="2025-07-01", end_date="2025-07-01",
                    daily="temperature_2m_max,temperature_2m_min", timezone="America/New_York")
    _, hourly = _get(standin, "/v1/forecast", **NYC, start_date="2025-07-01", end_date="2025-07-02",
                     hourly="temperature_2m", timezone="GMT")
    hours = dict(zip(hourly["hourly"]["time"], hourly["hourly"]["temperature_2m"], strict=True))
    day = [hours[f"2025-07-0{1 + (h + 5) // 24}T{(h + 5) % 24:02d}:00"] for h in range(24)]  # 05:00 .. 04:00 UTC

    assert daily["daily"]["temperature_2m_max"] == [max(day)]
    assert daily["daily"]["temperature_2m_min"] == [min(day)]


def test_unixtime_hours_are_utc_epochs_and_days_local_midnights(standin):
    standin.configure(open_meteo_today="2025-12-15")
    _, hourly = _get(standin, "/v1/archive", **NYC, start_date="2025-07-01", end_date="2025-07-01",
                     hourly="temperature_2m", timezone="America/New_York", timeformat="unixtime")
    _, daily = _get(standin, "/v1/forecast", **NYC, start_date="2025-07-01", end_date="2025-07-01",
                    daily="temperature_2m_max", timezone="America/New_York", timeformat="unixtime")

    assert hourly["hourly_units"]["time"] == "unixtime"
    assert hourly["hourly"]["time"][0] == 1751346000  # 2025-07-01T00:00-05:00 = 05:00 UTC
    assert daily["daily"]["time"] == [1751346000]


def test_archive_lags_five_days_behind_the_day_of_the_request(standin):
    standin.configure(open_meteo_today="2025-07-10")
    _, body = _get(standin, "/v1/archive", **NYC, start_date="2025-07-04", end_date="2025-07-06",
                   hourly="temperature_2m", timezone="GMT")
    values = dict(zip(body["hourly"]["time"], body["hourly"]["temperature_2m"], strict=True))

    assert values["2025-07-05T23:00"] is not None and values["2025-07-06T00:00"] is None
