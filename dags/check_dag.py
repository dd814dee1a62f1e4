"""The Astro course's check DAG: a BashOperator writes a file, another checks it exists, a Python
task reads and logs it. The path is per run, so parallel runs never share one file."""

from datetime import UTC, datetime
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, task

from include.dag_defaults import DEFAULT_ARGS, LOCAL_FILES_QUEUE
from include.runs import run_stamp

# $CHECK_DAG_DIR/<dag_id>/<logical date>/dummy (default under the system temp dir). The three tasks
# share a local file, so they must share a machine: under Celery they go to the queue one worker
# serves (LOCAL_FILES_QUEUE, include/dag_defaults.py).
RUN_FILE = "{{ var.value.get('CHECK_DAG_DIR', '/tmp/check_dag') }}/{{ dag.dag_id }}/{{ run_stamp(dag_run) }}/dummy"

with DAG(
    dag_id="check_dag",
    schedule="@daily",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    default_args={**DEFAULT_ARGS, "queue": LOCAL_FILES_QUEUE},
    user_defined_macros={"run_stamp": run_stamp},
    tags=["astro-course", "bash"],
    doc_md="""
### Check DAG (Astro course)
`create_file` writes "Hi there!" to a file of this run (`/tmp/check_dag/check_dag/<logical date>/dummy`,
base folder from the `CHECK_DAG_DIR` variable), `check_file_exists` fails unless it is there, and
`read_file` logs its content. The three share a local file: on Celery workers they run in the worker
queue `LOCAL_FILES_QUEUE` names, which one worker serves.
""",
):
    create_file = BashOperator(
        task_id="create_file",
        bash_command=f'mkdir -p "$(dirname "{RUN_FILE}")" && echo "Hi there!" > "{RUN_FILE}"',
    )
    check_file_exists = BashOperator(task_id="check_file_exists", bash_command=f'test -f "{RUN_FILE}"')

    @task(templates_dict={"path": RUN_FILE})
    def read_file(templates_dict=None) -> str:
        content = Path(templates_dict["path"]).read_text()
        print(f"{templates_dict['path']}: {content!r}")
        return content.strip()

    create_file >> check_file_exists >> read_file()
