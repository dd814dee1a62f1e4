"""The Astro course DAGs, run whole: check_dag's per-run file, xcoms_demo's shared key, and the
two dependency shapes."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest


def _run(dagbag, dag_id, logical_date):
    run = copy.deepcopy(dagbag.get_dag(dag_id)).test(logical_date=logical_date)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_check_dag_writes_checks_and_reads_a_file_of_its_own_run(dagbag, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_CHECK_DAG_DIR", str(tmp_path))

    first, states = _run(dagbag, "check_dag", datetime(2025, 2, 1, tzinfo=UTC))
    second, _ = _run(dagbag, "check_dag", datetime(2025, 2, 2, tzinfo=UTC))

    assert first.state == second.state == "success", states
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("dummy"))
    assert files == ["check_dag/20250201T000000/dummy", "check_dag/20250202T000000/dummy"]  # never shared
    assert first.get_task_instance("read_file").xcom_pull(task_ids="read_file") == "Hi there!"


def test_check_fails_when_the_file_is_missing(dagbag, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_CHECK_DAG_DIR", str(tmp_path))
    dag = copy.deepcopy(dagbag.get_dag("check_dag"))
    dag.get_task("create_file").bash_command = "true"  # writes nothing
    for task in dag.tasks:
        task.retries = 0

    run = dag.test(logical_date=datetime(2025, 2, 3, tzinfo=UTC))

    assert run.state == "failed"
    assert run.get_task_instance("check_file_exists").state == "failed"


def test_xcoms_demo_pushes_two_characters_under_one_key(dagbag, standin):
    run, states = _run(dagbag, "xcoms_demo", datetime(2025, 2, 4, tzinfo=UTC))

    assert run.state == "success", states
    ti = run.get_task_instance("pull_characters")
    assert ti.xcom_pull(task_ids="pull_characters") == ["Luke Skywalker", "Darth Vader"]
    luke = ti.xcom_pull(task_ids="push_luke", key="character_info")
    assert luke == {"name": "Luke Skywalker", "height_cm": 172.0, "mass_kg": 77.0, "birth_year": "19BBY",
                    "film_count": 4}
    assert [r["path"] for r in standin.requests_seen() if r["path"].startswith("/api/people/")][-2:] in (
        ["/api/people/1/", "/api/people/4/"], ["/api/people/4/", "/api/people/1/"])


def test_swapi_unknown_person_is_a_clear_error(standin):
    from include.swapi import CharacterNotFound, fetch_character

    with pytest.raises(CharacterNotFound, match="SWAPI has no person 9999 .*Not found") as raised:
        fetch_character(9999)
    from airflow.sdk.exceptions import AirflowFailException

    assert isinstance(raised.value, AirflowFailException)  # asking again gets the same 404: no retry


@pytest.mark.parametrize(("fault", "retried", "message"), [
    ("http_503", True, "SWAPI answered HTTP 503"),
    ("truncated", True, "broke off: a JSON document cut short"),
    ("empty_body", True, "broke off: an empty body"),
    ("not_json", False, "SWAPI returned no person object"),
])
def test_swapi_server_trouble_is_retried_and_a_wrong_answer_is_not(standin, fault, retried, message):
    from airflow.sdk.exceptions import AirflowFailException

    from include.swapi import SwapiError, fetch_character

    standin.inject_fault("/api/people/", fault)
    with pytest.raises(SwapiError, match=message) as raised:
        fetch_character(1)
    assert isinstance(raised.value, AirflowFailException) is not retried


@pytest.mark.parametrize("dag_id", ["dependencies_demo", "dependencies_chain_demo"])
def test_dependency_shapes(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    shape = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}

    assert shape == {"task_a": ["task_b", "task_c", "task_d"], "task_b": ["task_e"], "task_c": ["task_e"],
                     "task_d": ["task_e"], "task_e": []}
    run, states = _run(dagbag, dag_id, datetime(2025, 2, 5, tzinfo=UTC))
    assert run.state == "success" and set(states.values()) == {"success"}
