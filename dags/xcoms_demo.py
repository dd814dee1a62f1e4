"""The Astro course's XCom demo: two tasks push character info (SWAPI) under one key, a third
pulls both by task id."""

from datetime import UTC, datetime

from airflow.sdk import dag, task

from include.dag_defaults import DEFAULT_ARGS
from include.swapi import XCOM_KEY, character_info, fetch_character


@dag(
    dag_id="xcoms_demo",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["astro-course", "xcom", "swapi"],
    doc_md="""
### XCom demo (Astro course)
`push_luke` and `push_vader` each fetch a character from SWAPI (`swapi` connection) and push a
few derived fields under the same XCom key `character_info`; `pull_characters` pulls both by task
id and logs them.
""",
)
def xcoms_demo():
    @task
    def push_luke(ti=None) -> None:
        ti.xcom_push(key=XCOM_KEY, value=character_info(fetch_character(1)))

    @task
    def push_vader(ti=None) -> None:
        ti.xcom_push(key=XCOM_KEY, value=character_info(fetch_character(4)))

    @task
    def pull_characters(ti=None) -> list:
        characters = ti.xcom_pull(task_ids=["push_luke", "push_vader"], key=XCOM_KEY)
        for character in characters:
            print(f"{character['name']}: {character['height_cm']} cm, {character['mass_kg']} kg, "
                  f"born {character['birth_year']}, in {character['film_count']} films")
        return [c["name"] for c in characters]

    [push_luke(), push_vader()] >> pull_characters()


xcoms_demo()
