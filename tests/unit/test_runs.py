"""A run without a logical date or data interval - Airflow 3's manual trigger without a logical
date - is refused with a message that says how to trigger it, by every DAG that needs one; the
catch-up DAGs also take the period from a param."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.daily_weather import week_of_run
from include.nyc_taxi import month_of_run
from include.runs import require_data_interval
from include.strava import sync_window

MESSAGE = "this run has no data interval: it was triggered without a logical date"


@pytest.mark.parametrize("call", [
    lambda: sync_window(None, None),
    lambda: require_data_interval(datetime(2025, 1, 1, tzinfo=UTC), None),
], ids=["strava", "half an interval"])
def test_interval_based_steps_refuse_a_run_without_a_data_interval(call):
    with pytest.raises(AirflowFailException, match=MESSAGE) as failure:
        call()
    assert "--logical-date" in str(failure.value) and "make dag DATE=" in str(failure.value)


def test_catch_up_dags_without_logical_date_or_param_say_which_param_to_set():
    with pytest.raises(AirflowFailException, match="trigger it with month=YYYY-MM"):
        month_of_run(None, None)
    with pytest.raises(AirflowFailException, match="`week_start` param"):
        week_of_run(None, None)


def test_a_data_interval_passes_through():
    start, end = datetime(2021, 1, 2, 6, tzinfo=UTC), datetime(2021, 2, 2, 6, tzinfo=UTC)

    assert require_data_interval(start, end) == (start, end)


def test_month_of_a_run_is_the_param_or_the_month_before_its_logical_date():
    assert month_of_run(datetime(2021, 2, 2, 6, tzinfo=UTC)) == "2021-01"
    assert month_of_run(datetime(2021, 1, 2, 6, tzinfo=UTC)) == "2020-12"
    assert month_of_run(datetime(2026, 11, 22, tzinfo=UTC), "2021-03") == "2021-03"
    with pytest.raises(AirflowFailException, match="is not a month"):
        month_of_run(None, "2021-13")


def test_week_of_a_run_is_the_param_or_a_week_starting_at_its_logical_date():
    start = datetime(2025, 1, 8, tzinfo=UTC)
    assert week_of_run(start) == (start, datetime(2025, 1, 15, tzinfo=UTC))
    assert week_of_run(datetime(2026, 11, 22, tzinfo=UTC), "2025-01-29")[0] == datetime(2025, 1, 29, tzinfo=UTC)
    with pytest.raises(AirflowFailException, match="is not a week of this backfill"):
        week_of_run(None, "2025-01-02")
    with pytest.raises(AirflowFailException, match="is not the start of a week"):
        week_of_run(datetime(2025, 1, 9, tzinfo=UTC))
