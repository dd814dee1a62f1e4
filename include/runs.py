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
