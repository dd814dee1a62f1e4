"""Fixtures shared by the end-to-end tests."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def dagbag(stack):
    """Every DAG of dags/, parsed once. Tests that change a DAG (retries, policies) deep-copy it."""
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


def fresh_dag(dag_id: str):
    """The DAG parsed anew from its file. For runs with a conf: Airflow's in-process task runner
    writes conf values into the task's Param objects, which copy.deepcopy shares, so a conf would
    leak into every later run of the session's DagBag."""
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


MIRROR_PATH = "/DataTalksClub/nyc-tlc-data/releases/download/yellow/yellow_tripdata_{month}.csv.gz"


def use_course_mirror(monkeypatch) -> None:
    """The `nyc_tlc` connection as a user who switched back to the course's CSV.gz mirror has it: the
    shipped default (the TLC's parquet files) with the one setting changed, its path template."""
    import json
    import os

    conn = json.loads(os.environ["AIRFLOW_CONN_NYC_TLC"])
    conn["extra"] = {**conn.get("extra", {}), "path": MIRROR_PATH}
    monkeypatch.setenv("AIRFLOW_CONN_NYC_TLC", json.dumps(conn))
