"""Weather as forecast at the issue instant (include/weather_forecasts.py) against the Open-Meteo stand-in's
previous-runs and live forecast APIs: the N selection never uses a run made after the issue instant (a DST
week, the 7th-day horizon rule), a marker planted in every run after it never reaches the features, the
live forecast for the issue happening now, and errors that name their cause."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from devstack.standins import open_meteo as standin_api
from include.open_meteo import OpenMeteoBadResponse, OpenMeteoRejectedRequest, OpenMeteoUnavailable
from include.taxi_weather import aggregate_weather
from include.weather_forecasts import (
    LIVE_WINDOW,
    forecast_days_as_issued,
    forecast_source,
    previous_day_for,
)

NYC = (40.7143, -74.006)
NEW_YORK = ZoneInfo("America/New_York")
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
# Saturday 2025-03-08 06:00 EST: the next day (Sunday 2025-03-09) springs forward (23 hours).
ISSUE = datetime(2025, 3, 8, 6, tzinfo=NEW_YORK)
WEEK = [date(2025, 3, 9) + timedelta(days=k) for k in range(7)]


def _hours_of(days):
    start = datetime(days[0].year, days[0].month, days[0].day, tzinfo=NEW_YORK).astimezone(UTC)
    after = days[-1] + DAY
    end = datetime(after.year, after.month, after.day, tzinfo=NEW_YORK).astimezone(UTC)
    return start, end, [start + k * HOUR for k in range(int((end - start) / HOUR) + 1)]


def _expected(issue, days, variable_hours=None):
    """The days' weather computed from the stand-in's own models, independently of the client's request."""
    start, end, hours = _hours_of(days)
    series = {}
    for name in ("temperature_2m", "precipitation"):
        values = []
        for t in hours:
            src, n = previous_day_for(t, issue)
            observed = standin_api.HOURLY_MODELS[name](*NYC, src, "best_match")
            values.append(standin_api.forecast_error(*NYC, src, n, name, observed))
        series[name] = values
    return aggregate_weather(hours, series["temperature_2m"], series["precipitation"], start, end, NEW_YORK)


def test_n_is_the_freshest_run_made_at_or_before_the_issue_instant():
    issued = ISSUE.astimezone(UTC)
    _, _, hours = _hours_of(WEEK)
    horizon = []
    for t in hours:
        src, n = previous_day_for(t, ISSUE)
        run = src - n * DAY
        assert run <= issued, f"{t}: run {run} after the issue instant"
        assert 1 <= n <= 7
        if src == t:
            assert n == 1 or t - (n - 1) * DAY > issued, f"{t}: a fresher run (N={n - 1}) was allowed"
        else:  # the horizon rule: the N=7 forecast of the same hour a day earlier
            assert (t - src, n) == (DAY, 7) and t > issued + 7 * DAY
            horizon.append(t)
    # Sunday 00:00 EST is 18 h after the issue: N=1; the next Saturday's hours after 06:00 EST + 7 x 24 h
    # (07:00 EDT after the spring-forward, N=7 exactly) take the horizon rule: 08:00-23:00 EDT and the
    # closing midnight (the label of the last hour's precipitation).
    assert previous_day_for(datetime(2025, 3, 9, tzinfo=NEW_YORK), ISSUE)[1] == 1
    assert previous_day_for(datetime(2025, 3, 15, 7, tzinfo=NEW_YORK), ISSUE) == (issued + 7 * DAY, 7)
    assert horizon[0] == datetime(2025, 3, 15, 8, tzinfo=NEW_YORK) and len(horizon) == 17
    with pytest.raises(OpenMeteoRejectedRequest, match="no forecast known then reaches it"):
        previous_day_for(issued + 8 * DAY + HOUR, ISSUE)


def test_past_issue_uses_previous_runs_in_one_gmt_request(standin):
    now = ISSUE + 30 * DAY
    standin.configure(open_meteo_now=now.isoformat())
    standin.forget_requests()

    rows = forecast_days_as_issued(ISSUE, WEEK, *NYC, now=now)

    expected = _expected(ISSUE, WEEK)
    assert [r["day"] for r in rows] == WEEK and [r["lead_days"] for r in rows] == list(range(1, 8))
    assert {r["source"] for r in rows} == {"previous_runs"}
    for row in rows:
        want = expected[row["day"]]
        assert {k: row[k] for k in want if k != "weather_hours"} == {k: v for k, v in want.items()
                                                                     if k != "weather_hours"}
    assert expected[date(2025, 3, 9)]["weather_hours"] == 23  # the DST day has its 23 hours
    (request,) = standin.requests_seen()
    assert request["path"] == "/previous-runs-api/v1/forecast"
    assert request["query"]["timezone"] == "GMT"
    assert request["query"]["hourly"].split(",") == [f"{v}_previous_day{n}" for v in ("temperature_2m", "precipitation")
                                                     for n in range(1, 8)]


def test_a_marker_in_every_run_after_the_issue_instant_never_reaches_the_features(standin):
    now = ISSUE + 3 * DAY  # a late issue: the week's last days are still ahead of the stand-in's clock
    standin.configure(open_meteo_now=now.isoformat(), open_meteo_marker_after=ISSUE.isoformat())

    rows = forecast_days_as_issued(ISSUE, WEEK, *NYC, now=now)

    assert all(r["source"] == "previous_runs" for r in rows)
    assert all(-40 < r["temperature_min"] <= r["temperature_max"] < 50 for r in rows)
    assert all(r["precipitation"] < 200 for r in rows)
    # The marker works: an issue instant a second later would already see it (runs made after ISSUE).
    marked = forecast_days_as_issued(ISSUE + timedelta(days=1), [WEEK[-1]], *NYC, now=now)
    assert marked[0]["temperature_max"] == standin_api.MARKER_VALUE


def test_forecast_errors_grow_with_the_lead():
    start = datetime(2025, 1, 1, tzinfo=UTC)
    hours = [start + k * HOUR for k in range(24 * 60)]

    def mean_error(n):
        return sum(abs(standin_api.forecast_error(*NYC, t, n, "temperature_2m", 0.0)) for t in hours) / len(hours)

    errors = [mean_error(n) for n in range(1, 8)]
    assert errors == sorted(errors) and errors[0] < 0.5 < 2.5 < errors[-1]


def test_the_issue_happening_now_uses_the_live_forecast(standin):
    now = ISSUE + timedelta(minutes=20)
    standin.configure(open_meteo_now=now.isoformat(), open_meteo_marker_after=now.isoformat())
    standin.forget_requests()

    rows = forecast_days_as_issued(ISSUE, WEEK, *NYC, now=now)

    assert {r["source"] for r in rows} == {"live_forecast"}
    assert [r["lead_days"] for r in rows] == list(range(1, 8))
    assert all(r["temperature_max"] < 50 for r in rows)
    (request,) = standin.requests_seen()
    assert request["path"] == "/live-forecast-api/v1/forecast" and request["query"]["timezone"] == "GMT"
    assert forecast_source(ISSUE, ISSUE + LIVE_WINDOW) == "live_forecast"
    assert forecast_source(ISSUE, ISSUE + LIVE_WINDOW + timedelta(seconds=1)) == "previous_runs"


def test_errors_name_their_cause(standin):
    with pytest.raises(OpenMeteoRejectedRequest, match="collected from January 2024"):
        forecast_days_as_issued(datetime(2023, 12, 16, 6, tzinfo=NEW_YORK), [date(2023, 12, 17)], *NYC,
                                now=datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(OpenMeteoRejectedRequest, match="do not exist yet"):
        forecast_days_as_issued(ISSUE, WEEK, *NYC, now=ISSUE - HOUR)
    with pytest.raises(OpenMeteoRejectedRequest, match="no forecast known then reaches it"):
        forecast_days_as_issued(ISSUE, [WEEK[-1] + DAY], *NYC, now=ISSUE + 30 * DAY)
    with pytest.raises(OpenMeteoRejectedRequest, match="has no time zone"):
        forecast_days_as_issued(datetime(2025, 3, 8, 6), WEEK, *NYC)
    # The archive of runs does not reach the issue instant yet (the API's clock is behind ours).
    standin.configure(open_meteo_now=(ISSUE - 2 * DAY).isoformat())
    with pytest.raises(OpenMeteoBadResponse, match="previous runs have no value .*not in the"):
        forecast_days_as_issued(ISSUE, WEEK, *NYC, now=ISSUE + 30 * DAY)
    standin.configure(open_meteo_now=(ISSUE + 30 * DAY).isoformat())
    standin.inject_fault("/previous-runs-api/v1/forecast", "http_503")
    with pytest.raises(OpenMeteoUnavailable, match="overloaded"):
        forecast_days_as_issued(ISSUE, WEEK, *NYC, now=ISSUE + 30 * DAY)


def test_previous_runs_before_collection_are_null_and_connections_reach_the_stand_in(standin):
    import json
    import urllib.request
    from urllib.parse import urlencode

    from devstack.settings import point_apis_at
    from include.http_api import base_url_from_connection

    standin.configure(open_meteo_now="2025-01-01T00:00:00+00:00")
    query = urlencode({"latitude": NYC[0], "longitude": NYC[1], "start_date": "2023-12-30", "end_date": "2024-01-10",
                       "hourly": "temperature_2m_previous_day3", "timezone": "GMT"})
    with urllib.request.urlopen(f"{standin.standin_url}/previous-runs-api/v1/forecast?{query}", timeout=10) as resp:
        hourly = json.load(resp)["hourly"]
    by_time = dict(zip(hourly["time"], hourly["temperature_2m_previous_day3"], strict=True))
    assert by_time["2024-01-03T23:00"] is None and isinstance(by_time["2024-01-04T00:00"], float)

    conns = point_apis_at({c: {"conn_type": "http", "host": "x", "schema": "https", "port": None, "extra": {}}
                           for c in ("open_meteo_forecast", "open_meteo_previous_runs", "open_meteo_live_forecast")},
                          "http://127.0.0.1:4")

    class Conn:
        def __init__(self, conn_id, conn):
            self.conn_id, self.conn_type = conn_id, conn["conn_type"]
            self.host, self.schema, self.port = conn["host"], conn["schema"], conn["port"]

    assert {c: base_url_from_connection(Conn(c, conn)) for c, conn in conns.items()} == {
        "open_meteo_forecast": "http://127.0.0.1:4",
        "open_meteo_previous_runs": "http://127.0.0.1:4/previous-runs-api",
        "open_meteo_live_forecast": "http://127.0.0.1:4/live-forecast-api"}
