"""The Astro course's dependency shapes with the TaskFlow API: task_a >> [task_b, task_c, task_d]
>> task_e, once with bit-shift operators and once with chain()."""

from datetime import UTC, datetime

from airflow.sdk import chain, dag, task

from include.dag_defaults import DEFAULT_ARGS


@task
def say(letter: str) -> str:
    print(f"hi from task {letter}")
    return letter


def _tasks():
    return {letter: say.override(task_id=f"task_{letter}")(letter) for letter in "abcde"}


@dag(dag_id="dependencies_demo", schedule=None, start_date=datetime(2025, 1, 1, tzinfo=UTC), catchup=False,
     default_args=DEFAULT_ARGS, tags=["astro-course", "dependencies"],
     doc_md="`task_a >> [task_b, task_c, task_d] >> task_e` with bit-shift operators (Astro course).")
def dependencies_demo():
    t = _tasks()
    t["a"] >> [t["b"], t["c"], t["d"]] >> t["e"]


@dag(dag_id="dependencies_chain_demo", schedule=None, start_date=datetime(2025, 1, 1, tzinfo=UTC), catchup=False,
     default_args=DEFAULT_ARGS, tags=["astro-course", "dependencies"],
     doc_md="The same shape as `dependencies_demo`, written with `chain()` (Astro course).")
def dependencies_chain_demo():
    t = _tasks()
    chain(t["a"], [t["b"], t["c"], t["d"]], t["e"])


dependencies_demo()
dependencies_chain_demo()
