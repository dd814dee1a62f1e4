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
