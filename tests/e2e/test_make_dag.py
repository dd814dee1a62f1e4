"""`make dag` with no `make run` up: the twin of `astro run` starts the stack's servers from its
state folder, runs the DAG once in-process, prints each task's state and stops what it started."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devstack.services import distinct_free_ports, free_s3_base_port, port_in_use, s3_block_ports
from devstack.stack import ROOT


def _standalone_env(tmp_path) -> dict[str, str]:
    """A state folder and ports of its own - as a fresh clone's `make dag` would use .local/."""
    s3 = free_s3_base_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW__"))}  # nothing from the test stack
    api, postgres, redis, standin = distinct_free_ports(4, taken=set(s3_block_ports(s3)))
    return env | {"DEVSTACK_STATE_DIR": str(tmp_path / "state"), "DEVSTACK_API_PORT": str(api),
                  "DEVSTACK_POSTGRES_PORT": str(postgres), "DEVSTACK_REDIS_PORT": str(redis),
                  "DEVSTACK_S3_PORT": str(s3), "DEVSTACK_STANDIN_PORT": str(standin)}


@pytest.mark.usefixtures("stack")  # not used, but a missing server install fails here with its message
def test_make_dag_runs_a_dag_once_on_its_own_servers_and_prints_task_states(tmp_path):
    env = _standalone_env(tmp_path)

    result = subprocess.run([sys.executable, "-m", "devstack.run_dag", "xcoms_demo", "--offline"], env=env,
                            capture_output=True, text=True, timeout=600, cwd=ROOT)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "make run is not up: starting the stack's servers" in result.stdout
    summary = result.stdout.split("\nDAG xcoms_demo  run ", 1)[1].splitlines()
    assert "state success" in summary[0]
    states = {line.split()[0]: line.split()[1] for line in summary[2:] if line.strip()}
    assert states == {"push_luke": "success", "push_vader": "success", "pull_characters": "success"}, summary
    # Everything it started is stopped again: its ports are free.
    for name in ("DEVSTACK_POSTGRES_PORT", "DEVSTACK_REDIS_PORT", "DEVSTACK_S3_PORT", "DEVSTACK_STANDIN_PORT"):
        assert not port_in_use(int(env[name])), name
