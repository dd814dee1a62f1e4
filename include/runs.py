"""Which moment a DAG run stands for - the basis of every key, file name and row it writes."""

from __future__ import annotations

from datetime import UTC, datetime


def run_moment(dag_run) -> datetime:
    """The run's logical date in UTC; for a manual run without one, the time it was requested.
    Re-running the run gives the same moment, hence the same keys and rows."""
    moment = dag_run.logical_date or dag_run.run_after
    if moment is None:
        raise ValueError(f"run {dag_run.run_id!r} has neither a logical date nor a run_after time")
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def run_stamp(dag_run) -> str:
    """`20250101T000000`: run_moment as it appears in file names and object keys."""
    return run_moment(dag_run).strftime("%Y%m%dT%H%M%S")


def require_data_interval(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """The run's data interval, or a clear failure for a run that has none: a DAG that works by
    data interval cannot guess which one a bare manual trigger meant."""
    if start is None or end is None:
        from airflow.sdk.exceptions import AirflowFailException  # noqa: PLC0415 - keep this module light

        raise AirflowFailException(
            "this run has no data interval: it was triggered without a logical date. Trigger it with one "
            "(UI: 'Logical date'; CLI: `airflow dags trigger --logical-date ...`; `make dag DATE=...`).")
    return start, end
