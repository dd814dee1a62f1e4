"""nyc_taxi_ingestion's schedule (include/timetables.py): a start of its own, no end unless given."""

from datetime import UTC, datetime

from airflow.timetables.base import DataInterval, TimeRestriction

from include.timetables import MonthlyAfterMonthTimetable

SINCE_2009 = TimeRestriction(datetime(2009, 1, 1, tzinfo=UTC), None, True)


def _runs(timetable, restriction=SINCE_2009, limit=40) -> list[datetime]:
    runs, last = [], None
    while len(runs) < limit:
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        if info is None:
            break
        runs.append(info.logical_date)
        last = info.data_interval
    return runs


def test_open_ended_catch_up_starts_at_its_first_month_whatever_the_dags_start_date():
    runs = _runs(MonthlyAfterMonthTimetable("2025-01"), limit=24)
    assert runs[0] == datetime(2025, 2, 2, 6, tzinfo=UTC)  # January, loaded once it is over
    assert runs[11] == datetime(2026, 1, 2, 6, tzinfo=UTC)  # December 2025, across the year
    assert len(runs) == 24  # and on: no end date to maintain


def test_a_last_month_ends_the_schedule_and_an_empty_window_has_no_run():
    assert _runs(MonthlyAfterMonthTimetable("2021-01", "2021-03")) == [
        datetime(2021, 2, 2, 6, tzinfo=UTC), datetime(2021, 3, 2, 6, tzinfo=UTC), datetime(2021, 4, 2, 6, tzinfo=UTC)]
    assert _runs(MonthlyAfterMonthTimetable("2025-01", "2020-12")) == []


def test_after_a_manual_run_the_schedule_goes_on_from_its_last_scheduled_month():
    timetable = MonthlyAfterMonthTimetable("2025-01")
    info = timetable.next_dagrun_info(last_automated_data_interval=DataInterval.exact(
        datetime(2025, 6, 2, 6, tzinfo=UTC)), restriction=SINCE_2009)
    assert info.logical_date == datetime(2025, 7, 2, 6, tzinfo=UTC)
    manual = timetable.infer_manual_data_interval(run_after=datetime(2026, 12, 4, 9, tzinfo=UTC))
    assert manual.start == datetime(2026, 12, 4, 9, tzinfo=UTC)


def test_it_round_trips_through_serialization():
    timetable = MonthlyAfterMonthTimetable("2025-01")
    again = MonthlyAfterMonthTimetable.deserialize(timetable.serialize())
    assert (again.first_month, again.last_month, again.summary) == ("2025-01", None, "monthly from 2025-01")
