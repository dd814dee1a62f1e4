"""The pins agree with the Astro Runtime of the Dockerfile (runtime-constraints.txt): nothing in
requirements.txt needs a newer Airflow or provider than the Runtime ships - the image build would
upgrade it - and the local venv runs the Runtime's own versions."""

from __future__ import annotations

import shutil
import subprocess
from importlib import metadata

import pytest

from devstack import runtime_pins
from devstack.runtime_pins import ROOT

# runtime-constraints.txt, the lock and the Makefile are not in the image: `astro dev pytest` deselects this.
pytestmark = pytest.mark.make_test


def test_dockerfile_constraints_requirements_and_lock_agree():
    assert runtime_pins.check() == []


def test_the_constraints_name_the_image_and_their_source():
    header = runtime_pins.read_header(ROOT / runtime_pins.CONSTRAINTS)
    pins = runtime_pins.runtime_pins()

    assert header["runtime-image"] == runtime_pins.dockerfile_image()
    assert header["source"]
    assert pins["apache-airflow"] == runtime_pins.read_pins(ROOT / "requirements-dev.txt")["apache-airflow"]
    assert all(runtime_pins.RUNTIME_PACKAGE.match(name) for name in pins)
    assert {"apache-airflow-providers-common-compat", "apache-airflow-providers-common-io",
            "apache-airflow-providers-common-sql", "apache-airflow-providers-standard"} <= set(pins)


@pytest.mark.parametrize("requirements", ["requirements.txt", "requirements-dev.txt"])
def test_nothing_installed_needs_a_newer_runtime_package(requirements):
    """Walks the installed metadata from each requirement: every requirement on a package the Runtime
    ships must accept the Runtime's version (amazon 9.39.0, e.g., needs common-compat>=1.23.0)."""
    conflicts = runtime_pins.requirement_conflicts(runtime_pins.requirement_roots(ROOT / requirements),
                                                   runtime_pins.runtime_pins())

    assert conflicts == []


def test_the_local_venv_has_the_runtimes_versions():
    for name, version in runtime_pins.runtime_pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # shipped by the Runtime, not needed locally (celery, openlineage, ...)
        assert installed == version, f"{name}: venv {installed}, Runtime {version} - run make install"


def test_a_provider_needing_a_newer_runtime_package_is_named():
    requires = {
        "apache-airflow-providers-amazon": ["apache-airflow-providers-common-compat>=1.23.0",
                                            "apache-airflow-providers-http",
                                            "s3fs>=2023.10.0; extra == 's3fs'"],
        "apache-airflow-providers-http": ["apache-airflow-providers-common-compat>=1.17.0"],
        "s3fs": ["apache-airflow-providers-common-sql>=9; python_version < '3'"],  # marker false: ignored
    }

    conflicts = runtime_pins.requirement_conflicts([("apache-airflow-providers-amazon", {"s3fs"})],
                                                   {"apache-airflow-providers-common-compat": "1.15.0",
                                                    "apache-airflow-providers-common-sql": "2.0.1"},
                                                   requires=lambda name: requires.get(name, []))

    assert conflicts == [
        "apache-airflow-providers-amazon requires apache-airflow-providers-common-compat>=1.23.0; Astro Runtime "
        "ships apache-airflow-providers-common-compat==1.15.0",
        "apache-airflow-providers-http requires apache-airflow-providers-common-compat>=1.17.0; Astro Runtime "
        "ships apache-airflow-providers-common-compat==1.15.0",
    ]


def _project_copy(tmp_path):
    for name in ("Dockerfile", "requirements.txt", "requirements-dev.txt", "requirements-dev.lock",
                 runtime_pins.CONSTRAINTS):
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


def test_check_names_a_runtime_package_listed_an_unpinned_provider_and_a_stale_lock(tmp_path):
    root = _project_copy(tmp_path)
    with (root / "requirements.txt").open("a") as requirements:
        requirements.write("apache-airflow-providers-common-compat==1.23.0\n")
    lock = (root / "requirements-dev.lock").read_text()
    lock = lock.replace("apache-airflow-providers-http==", "apache-airflow-providers-ftp==9.9.9\n"
                        "apache-airflow-providers-http==")
    (root / "requirements-dev.lock").write_text(lock.replace("apache-airflow-providers-common-io==1.8.0",
                                                             "apache-airflow-providers-common-io==1.11.0"))

    problems = "\n".join(runtime_pins.check(root))

    assert "requirements.txt lists apache-airflow-providers-common-compat, which Astro Runtime ships" in problems
    assert "requirements-dev.lock has apache-airflow-providers-common-io==1.11.0, the Runtime ships 1.8.0" in problems
    assert "apache-airflow-providers-ftp (lock: 9.9.9) is installed into the image but not pinned" in problems


def test_check_names_a_dockerfile_moved_to_another_runtime(tmp_path):
    root = _project_copy(tmp_path)
    dockerfile = (root / "Dockerfile").read_text()
    (root / "Dockerfile").write_text(dockerfile.replace("runtime:3.3-8-python-3.12", "runtime:3.3-9-python-3.12"))

    assert any("the Dockerfile uses astrocrpublic.azurecr.io/runtime:3.3-9-python-3.12" in problem
               for problem in runtime_pins.check(root))


def test_a_runtime_freeze_file_rewrites_the_constraints(tmp_path):
    """What `make lock RUNTIME_FREEZE=...` does first: Airflow and the providers of the freeze file, with
    the file's name and digest as the source."""
    root = _project_copy(tmp_path)
    tag = runtime_pins.runtime_tag(runtime_pins.dockerfile_image(root))
    freeze = tmp_path / f"runtime-{tag}.txt"
    freeze.write_text("apache-airflow==3.3.2\napache-airflow-core==3.3.2\napache-airflow-providers-common-compat"
                      "==1.19.0\napache-airflow-providers-celery==3.22.1\nastronomer-providers-logging==1.6.9\n"
                      "pandas==2.3.3\nrequests==2.32.5\nsome-local-wheel @ file:///tmp/x.whl\n")

    text = runtime_pins.from_freeze(freeze, root)

    assert runtime_pins.read_pins(root / runtime_pins.CONSTRAINTS) == {
        "apache-airflow": "3.3.2", "apache-airflow-core": "3.3.2",
        "apache-airflow-providers-celery": "3.22.1", "apache-airflow-providers-common-compat": "1.19.0",
        "astronomer-providers-logging": "1.6.9"}
    header = runtime_pins.read_header(root / runtime_pins.CONSTRAINTS)
    assert header["runtime-image"] == runtime_pins.dockerfile_image(root)
    assert header["source"].startswith(f"the Runtime's freeze file runtime-{tag}.txt (sha256 ")
    assert text == (root / runtime_pins.CONSTRAINTS).read_text()


def test_a_freeze_file_of_another_runtime_or_airflow_is_refused(tmp_path):
    root = _project_copy(tmp_path)
    other = tmp_path / "runtime-3.2-6-python-3.12.txt"
    other.write_text("apache-airflow==3.2.1\n")
    with pytest.raises(SystemExit, match="freeze file of Runtime 3.2-6-python-3.12, the Dockerfile uses 3.3-8"):
        runtime_pins.from_freeze(other, root)
    renamed = tmp_path / "freeze.txt"
    renamed.write_text("apache-airflow==3.3.1\n")
    with pytest.raises(SystemExit, match="ships apache-airflow==3.3.1, requirements-dev.txt pins 3.3.2"):
        runtime_pins.from_freeze(renamed, root)
    assert (root / runtime_pins.CONSTRAINTS).read_text() == (ROOT / runtime_pins.CONSTRAINTS).read_text()


def test_make_lock_resolves_within_the_constraints_and_takes_the_standalone_freeze_file():
    """`make -n` prints the commands without running them."""
    default = subprocess.run(["make", "-n", "lock"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    given = subprocess.run(["make", "-n", "lock", "RUNTIME_FREEZE=/tmp/runtime-3.3-8-python-3.12.txt"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
    tag = runtime_pins.runtime_tag(runtime_pins.dockerfile_image())

    assert "--constraints runtime-constraints.txt" in default and "-m devstack.runtime_pins check" in default
    assert ("from-freeze" in default) == (ROOT / f".astro/standalone/freeze-{tag}.txt").exists()
    assert '-m devstack.runtime_pins from-freeze "/tmp/runtime-3.3-8-python-3.12.txt"' in given
