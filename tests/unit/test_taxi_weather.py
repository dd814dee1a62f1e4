"""include/taxi_weather.py without a scheduler: which months a run builds, New York days of weather
hours across DST (temperature at the hour, precipitation over the preceding hour), the chart."""

from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.taxi_weather import aggregate_weather, chart_svg, month_bounds, months_of_run

NY = ZoneInfo("America/New_York")


def _event(month=None, minute=0, **extra):
    return SimpleNamespace(extra={"month": month, **extra} if month else extra, source_dag_id="nyc_taxi_ingestion",
                           source_run_id=f"run-{month}", timestamp=datetime(2026, 1, 1, 12, minute, tzinfo=UTC))


def test_every_month_named_by_the_events_once_oldest_first():
    events = [_event("2021-03", 1), _event("2021-01", 2, rows=10), _event("2021-03", 3)]

    assert months_of_run(events) == ["2021-01", "2021-03"]


def test_events_after_the_triggering_ones_are_built_too():
    assert months_of_run([_event("2021-06", 1)], [_event("2021-07", 2)]) == ["2021-06", "2021-07"]


def test_an_event_without_a_month_is_ignored_when_others_name_one(caplog):
    assert months_of_run([_event(None, 1), _event("2021-02", 2), _event("21-2", 3)]) == ["2021-02"]
    assert "2 yellow_taxi_trips event(s) name no month" in caplog.text


def test_the_month_param_wins():
    assert months_of_run([_event("2021-02")], month="2021-05") == ["2021-05"]


@pytest.mark.parametrize("events", [[], [_event(None)]])
def test_a_run_with_no_month_fails_saying_how_to_run_it(events):
    with pytest.raises(AirflowFailException, match=r"`month` param .*nyc_taxi_ingestion"):
        months_of_run(events)


def test_month_bounds():
    assert month_bounds("2021-12") == (date(2021, 12, 1), date(2022, 1, 1))
    with pytest.raises(AirflowFailException, match="not a month"):
        month_bounds("2021-13")


def _hours(first: date, last: date):
    """UTC instants of the New York days first..last, plus the hour ending at the last midnight."""
    start = datetime(first.year, first.month, first.day, tzinfo=NY).astimezone(UTC)
    after = last + timedelta(days=1)
    end = datetime(after.year, after.month, after.day, tzinfo=NY).astimezone(UTC)
    moments = [start + timedelta(hours=h) for h in range(int((end - start) / timedelta(hours=1)) + 1)]
    return start, end, moments


@pytest.mark.parametrize(("day", "hours"), [(date(2021, 3, 14), 23), (date(2021, 11, 7), 25), (date(2021, 7, 4), 24)])
def test_weather_days_are_new_york_days_with_23_24_or_25_hours(day, hours):
    start, end, moments = _hours(day - timedelta(days=1), day + timedelta(days=1))
    temps = [float(i) for i in range(len(moments))]  # the hour's index: min/max show which hours were taken
    rain = [1.0] * len(moments)

    weather = aggregate_weather(moments, temps, rain, start, end, NY)

    assert sorted(weather) == [day - timedelta(days=1), day, day + timedelta(days=1)]
    before = weather[day - timedelta(days=1)]["weather_hours"]
    assert weather[day]["weather_hours"] == hours and weather[day]["precipitation"] == hours
    assert weather[day]["temperature_min"] == before and weather[day]["temperature_max"] == before + hours - 1
    assert weather[day]["temperature_mean"] == before + (hours - 1) / 2


def test_precipitation_is_the_preceding_hour_sum():
    """The value labelled at local midnight fell during the last hour of the day before."""
    start, end, moments = _hours(date(2021, 3, 1), date(2021, 3, 2))
    rain = [0.0] * len(moments)
    rain[0] = 5.0  # labelled 2021-03-01T00:00 New York: fell on Feb 28, outside the days asked
    rain[24] = 2.0  # labelled 2021-03-02T00:00: fell from 23:00 to 24:00 on March 1
    rain[25] = 0.5  # labelled 01:00 on March 2
    rain[48] = 0.25  # labelled 2021-03-03T00:00: the last hour of March 2

    weather = aggregate_weather(moments, [1.0] * len(moments), rain, start, end, NY)

    assert weather[date(2021, 3, 1)]["precipitation"] == 2.0
    assert weather[date(2021, 3, 2)]["precipitation"] == 0.75


def test_a_day_with_a_missing_hour_fails():
    from include.open_meteo import OpenMeteoBadResponse

    start, end, moments = _hours(date(2021, 3, 1), date(2021, 3, 2))
    rain = [0.0] * len(moments)
    rain[30] = None

    with pytest.raises(OpenMeteoBadResponse, match=r"no complete hourly weather for 2021-03-02"):
        aggregate_weather(moments, [1.0] * len(moments), rain, start, end, NY)


def test_chart_is_a_valid_svg_and_the_same_for_the_same_rows():
    rows = [(date(2021, 2, d), 1000 + 10 * d, -3.0 + d / 10, 0.5 + d / 10, 4.0 + d / 10, 0.0) for d in range(1, 29)]

    svg = chart_svg("2021-02", rows)

    assert ElementTree.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
    assert chart_svg("2021-02", rows) == svg
    assert chart_svg("2021-02", rows[:-1]) != svg


def test_the_stand_in_serves_hourly_precipitation_for_new_york_in_2021(standin):
    """The archive's documented hourly `precipitation` (mm, sum of the preceding hour): a year of
    plausible values, the same for an instant whatever zone labels it."""
    import json
    import urllib.request
    from urllib.parse import urlencode

    def get(**params):
        query = urlencode({"latitude": 40.7143, "longitude": -74.006, "start_date": "2021-01-01",
                           "end_date": "2021-12-31", "hourly": "temperature_2m,precipitation", **params})
        with urllib.request.urlopen(f"{standin.standin_url}/v1/archive?{query}", timeout=30) as resp:
            return json.load(resp)

    gmt, local = get(timezone="GMT"), get(timezone="America/New_York")

    assert gmt["hourly_units"] == {"time": "iso8601", "temperature_2m": "°C", "precipitation": "mm"}
    rain = gmt["hourly"]["precipitation"]
    assert len(rain) == 8760 and all(v >= 0 and round(v, 1) == v for v in rain)
    assert 0.05 < sum(v > 0 for v in rain) / len(rain) < 0.3  # it rains in a minority of hours
    assert 800 < sum(rain) < 1600  # mm a year, about New York's
    shift = -local["utc_offset_seconds"] // 3600  # one offset per answer: labels shifted, values the same
    assert local["hourly"]["precipitation"][:len(rain) - shift] == rain[shift:]
