"""Every DAG imports cleanly, is tagged, documented and retries (>= 2) - Astro's example test,
for Airflow 3.3, plus the project's own conventions."""

import logging
import os
from contextlib import contextmanager

import pytest
from airflow.configuration import conf
from airflow.models import DagBag

# Every DAG id of the project contract that exists so far; a rename breaks users' deployments.
CONTRACT_DAG_IDS = {
    "weather_data_classes_api", "weather_data_taskflow_api", "weather_data_s3", "scheduling_dataset_gathering",
    "backfilling_dataset_gathering", "scheduling_with_venvs", "connections_and_variables", "strava_data_pipeline",
    "nyc_taxi_ingestion", "check_dag", "xcoms_demo", "nyc_taxi_daily_weather",
}


@contextmanager
def suppress_logging(namespace):
    logger = logging.getLogger(namespace)
    old_value = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = old_value


def _dag_bag() -> DagBag:
    with suppress_logging("airflow"):
        return DagBag(dag_folder=conf.get("core", "dags_folder"))


def strip_path_prefix(path):
    return os.path.relpath(path, os.environ.get("AIRFLOW_HOME"))


def get_import_errors():
    """(file, error) for every import error; (None, None) so that the test always exists."""
    return [(None, None)] + [(strip_path_prefix(k), v.strip()) for k, v in _dag_bag().import_errors.items()]


def get_dags():
    return [(k, v, strip_path_prefix(v.fileloc)) for k, v in _dag_bag().dags.items()]


@pytest.mark.parametrize("rel_path,rv", get_import_errors(), ids=[x[0] for x in get_import_errors()])
def test_file_imports(rel_path, rv):
    """Test for import errors on a file"""
    if rel_path and rv:
        raise Exception(f"{rel_path} failed to import with message \n {rv}")


APPROVED_TAGS = {}


@pytest.mark.parametrize("dag_id,dag,fileloc", get_dags(), ids=[x[2] for x in get_dags()])
def test_dag_tags(dag_id, dag, fileloc):
    """test if a DAG is tagged and if those TAGs are in the approved list"""
    assert dag.tags, f"{dag_id} in {fileloc} has no tags"
    if APPROVED_TAGS:
        assert not set(dag.tags) - APPROVED_TAGS


@pytest.mark.parametrize("dag_id,dag, fileloc", get_dags(), ids=[x[2] for x in get_dags()])
def test_dag_retries(dag_id, dag, fileloc):
    """test if a DAG has retries set"""
    assert dag.default_args.get("retries", None) >= 2, f"{dag_id} in {fileloc} must have task retries >= 2."
    for task in dag.tasks:
        assert task.retries >= 2, f"{dag_id}.{task.task_id} overrides retries below 2"


@pytest.mark.parametrize("dag_id,dag, fileloc", get_dags(), ids=[x[2] for x in get_dags()])
def test_dag_is_documented(dag_id, dag, fileloc):
    assert dag.doc_md and len(dag.doc_md.strip()) > 40, f"{dag_id} in {fileloc} needs a doc_md for the UI"


def test_contract_dag_ids_exist():
    assert set(_dag_bag().dag_ids) >= CONTRACT_DAG_IDS
