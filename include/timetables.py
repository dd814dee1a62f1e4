"""The monthly schedule of nyc_taxi_ingestion: one run per month from a first month on, each on the
2nd of the month after at 06:00 UTC (when the month is complete), optionally up to a last month.

A custom timetable (registered by plugins/timetables.py, as Airflow requires of custom timetables:
https://airflow.apache.org/docs/apache-airflow/stable/howto/timetable.html) because no built-in one
has both a start of its own and no end:
- a cron timetable starts at the DAG's start_date, and a manual run whose logical date lies before
  the DAG's start_date gets no task instances - the `month` param must load any month, so the DAG's
  start_date stays in 2009 (the TLC's first records) and the catch-up starts here instead;
- an EventsTimetable is a finite list: it needs an end date someone maintains.
Open-ended, the schedule runs to the latest month; a month not yet published waits in its run
(wait_for_publication, a deferrable sensor) rather than here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.timetables.base import DagRunInfo, DataInterval, Timetable


def _month_index(month: str) -> int:
    year, mon = map(int, month.split("-"))
    return year * 12 + mon - 1


def _run_at(index: int) -> datetime:
    """When the month with this index is loaded: the 2nd of the month after, 06:00 UTC."""
    run = index + 1
    return datetime(run // 12, run % 12 + 1, 2, 6, tzinfo=UTC)


def _month_before(when: datetime) -> int:
    return when.year * 12 + when.month - 2


class MonthlyAfterMonthTimetable(Timetable):
    """Runs for months first_month..last_month (open-ended without last_month), each at the 2nd of
    the next month 06:00 UTC; a run's logical date is that instant (as before: an EventsTimetable of
    the same dates), so the month it loads is the month before its logical date."""

    run_ordering = ("logical_date",)

    def __init__(self, first_month: str, last_month: str | None = None):
        self.first_month = first_month
        self.last_month = last_month or None
        until = f"to {self.last_month}" if self.last_month else "to the latest published month (no end)"
        self.description = f"Monthly, the 2nd at 06:00 UTC: months {first_month} {until}"

    @property
    def summary(self) -> str:
        return f"monthly from {self.first_month}" + (f" to {self.last_month}" if self.last_month else "")

    def __repr__(self) -> str:
        return self.summary

    def _first(self) -> int:
        return _month_index(self.first_month)

    def _last(self) -> int | None:
        return _month_index(self.last_month) if self.last_month else None

    def next_dagrun_info(self, *, last_automated_data_interval: DataInterval | None, restriction) -> DagRunInfo | None:
        index = self._first()
        if last_automated_data_interval is not None:
            index = max(index, _month_before(last_automated_data_interval.end) + 1)
        earliest = restriction.earliest
        if not restriction.catchup:
            now = datetime.now(UTC)
            earliest = now if earliest is None or now > earliest else earliest
        if earliest is not None:
            # The first month whose run is not before `earliest`.
            index = max(index, _month_before(earliest) + (0 if _run_at(_month_before(earliest)) >= earliest else 1))
        last = self._last()
        if last is not None and index > last:
            return None
        run_at = _run_at(index)
        if restriction.latest is not None and run_at > restriction.latest:
            return None
        return DagRunInfo.exact(run_at)

    def infer_manual_data_interval(self, *, run_after) -> DataInterval:
        return DataInterval.exact(run_after)

    def serialize(self) -> dict[str, Any]:
        return {"first_month": self.first_month, "last_month": self.last_month}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> MonthlyAfterMonthTimetable:
        return cls(data["first_month"], data.get("last_month"))

    def validate(self) -> None:
        from airflow.exceptions import AirflowTimetableInvalid  # noqa: PLC0415

        for name in ("first_month", "last_month"):
            value = getattr(self, name)
            if value is not None and not (len(value) == 7 and value[4] == "-" and value[:4].isdigit()
                                          and value[5:].isdigit() and 1 <= int(value[5:]) <= 12):
                raise AirflowTimetableInvalid(f"{name}={value!r} is not a month: use YYYY-MM")
