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
