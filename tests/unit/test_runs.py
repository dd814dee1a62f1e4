"""A run without a data interval - Airflow 3's manual trigger without a logical date - is refused
with a message that says how to trigger it, by every DAG that works by data interval."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.daily_weather import fetch_interval_temperature_range
from include.nyc_taxi import month_of
from include.runs import require_data_interval
from include.strava import interval_bounds

MESSAGE = "this run has no data interval: it was triggered without a logical date"


@pytest.mark.parametrize("call", [
    lambda: month_of(None),
    lambda: interval_bounds(None, None),
    lambda: fetch_interval_temperature_range(None, None),
    lambda: require_data_interval(datetime(2025, 1, 1, tzinfo=UTC), None),
], ids=["nyc_taxi", "strava", "backfilling_dataset_gathering", "half an interval"])
def test_interval_based_steps_refuse_a_run_without_a_data_interval(call):
    with pytest.raises(AirflowFailException, match=MESSAGE) as failure:
        call()
    assert "--logical-date" in str(failure.value) and "make dag DATE=" in str(failure.value)


def test_a_data_interval_passes_through():
    start, end = datetime(2021, 1, 2, 6, tzinfo=UTC), datetime(2021, 2, 2, 6, tzinfo=UTC)

    assert require_data_interval(start, end) == (start, end)
    assert month_of(start) == "2021-01"
