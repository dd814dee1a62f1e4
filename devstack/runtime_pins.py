"""The Astro Runtime's own package versions (runtime-constraints.txt) and this project's pins against them.

    python -m devstack.runtime_pins from-freeze FREEZE_FILE   rewrite runtime-constraints.txt from a Runtime freeze file
    python -m devstack.runtime_pins check                     requirements*.txt and the lock against it

An Astro Runtime image already contains Apache Airflow and a set of providers. The image build installs
requirements.txt on top of them, and `astro dev start --standalone` installs Airflow from the Runtime's
freeze file, then requirements.txt with only Airflow and the task SDK held (astro-cli
airflow/standalone.go, Start; pkg/airflowrt/constraints.go, FetchConstraints:
https://cdn.astronomer.io/runtime-freeze/runtime-<tag>-python-<ver>.txt, cached as
.astro/standalone/freeze-<tag>-python-<ver>.txt). A requirement on a newer version of a package the
Runtime ships makes either install upgrade it - the deployed Airflow is then not the Runtime Astronomer
tested, nor what `make test` ran. So `make lock` resolves with the Runtime's versions as constraints,
every other provider is pinned in requirements.txt (pip would otherwise take the newest, whose
requirements may be newer than the Runtime's), and `check` (also tests/unit/test_runtime_pins.py) fails
when a file disagrees.

Standard library only: `make lock` runs it before the venv is synced.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = "runtime-constraints.txt"
# What a Runtime freeze file contributes: Airflow itself and the providers the image ships.
RUNTIME_PACKAGE = re.compile(r"^(apache-airflow(-core|-task-sdk|-providers-[a-z0-9-]+)?"
                             r"|astronomer-providers-[a-z0-9-]+)$")
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """`name==version` lines (extras and environment markers dropped) of a requirements, lock or freeze file."""
    pins: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        match = _PIN.match(line)
        if match and not line.lstrip().startswith("#"):
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def read_names(path: Path) -> set[str]:
    """Every distribution a requirements file names, pinned or not."""
    names = set()
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0]
        match = _NAME.match(line)
        if match and not line.lstrip().startswith("-"):
            names.add(canonical(match.group(1)))
    return names


def read_header(path: Path) -> dict[str, str]:
    """`# key: value` lines of runtime-constraints.txt (runtime-image, source)."""
    header = {}
    for line in Path(path).read_text().splitlines():
        match = re.match(r"^#\s*([a-z-]+):\s*(.+)$", line)
        if match:
            header.setdefault(match.group(1), match.group(2).strip())
    return header


def dockerfile_image(root: Path = ROOT) -> str:
    for line in (root / "Dockerfile").read_text().splitlines():
        if line.strip().upper().startswith("FROM "):
            return line.split()[1]
    raise ValueError("Dockerfile has no FROM line")


def runtime_tag(image: str) -> str:
    """`3.3-8-python-3.12` of `astrocrpublic.azurecr.io/runtime:3.3-8-python-3.12`."""
    return image.rsplit(":", 1)[1]


def runtime_pins(root: Path = ROOT) -> dict[str, str]:
    return read_pins(root / CONSTRAINTS)


def check(root: Path = ROOT) -> list[str]:
    """What disagrees between the Dockerfile, runtime-constraints.txt, requirements*.txt and the lock."""
    problems = []
    runtime = runtime_pins(root)
    image = dockerfile_image(root)
    declared = read_header(root / CONSTRAINTS).get("runtime-image")
    if declared != image:
        problems.append(f"{CONSTRAINTS} describes {declared}, the Dockerfile uses {image}: take the new Runtime's "
                        "versions (make lock RUNTIME_FREEZE=<its freeze file>) and update the file's header")
    requirements = root / "requirements.txt"
    image_pins = read_pins(requirements)
    for name in sorted(read_names(requirements) & set(runtime)):
        problems.append(f"requirements.txt lists {name}, which Astro Runtime ships ({name}=={runtime[name]}): "
                        "remove it - the image build would replace the Runtime's version")
    dev_pins = read_pins(root / "requirements-dev.txt")
    if dev_pins.get("apache-airflow") != runtime.get("apache-airflow"):
        problems.append(f"requirements-dev.txt pins apache-airflow=={dev_pins.get('apache-airflow')}, the Runtime "
                        f"ships {runtime.get('apache-airflow')}: move both together")
    lock = read_pins(root / "requirements-dev.lock")
    for name, version in sorted(runtime.items()):
        if name in lock and lock[name] != version:
            problems.append(f"requirements-dev.lock has {name}=={lock[name]}, the Runtime ships {version}: "
                            "run make lock")
    for name, version in sorted(image_pins.items()):
        if lock.get(name) != version:
            problems.append(f"requirements.txt pins {name}=={version}, the lock has {lock.get(name)}: run make lock")
    for name in sorted(lock):
        if name.startswith("apache-airflow-providers-") and name not in runtime and name not in image_pins:
            problems.append(f"{name} (lock: {lock[name]}) is installed into the image but not pinned in "
                            "requirements.txt: pin it there, or the image build takes its newest release, whose "
                            "requirements may be newer than the Runtime's providers")
    return problems


def requirement_conflicts(roots, runtime: dict[str, str], requires=None) -> list[str]:
    """Every requirement, in the dependency closure of `roots`, on a package the Runtime ships that the
    Runtime's version does not satisfy - what would make the image build upgrade a Runtime package.
    `requires(name)` gives a distribution's Requires-Dist lines (default: the installed metadata)."""
    from importlib import metadata  # noqa: PLC0415

    from packaging.requirements import Requirement  # noqa: PLC0415 - not needed by `make lock`'s steps

    def installed_requires(name: str) -> list[str]:
        try:
            return metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            return []

    requires = requires or installed_requires
    conflicts, seen = [], set()
    todo = [(canonical(name), frozenset(extras)) for name, extras in roots]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for line in requires(name):
            req = Requirement(line)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if req.marker and not any(req.marker.evaluate(env) for env in environments):
                continue
            dep = canonical(req.name)
            if dep in runtime and req.specifier and not req.specifier.contains(runtime[dep], prereleases=True):
                conflicts.append(f"{name} requires {req.name}{req.specifier}; Astro Runtime ships "
                                 f"{dep}=={runtime[dep]}")
            todo.append((dep, frozenset(req.extras)))
    return sorted(set(conflicts))


def requirement_roots(path: Path) -> list[tuple[str, set[str]]]:
    """(name, extras) of every entry of a requirements file."""
    roots = []
    for line in Path(path).read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", line.split("#", 1)[0])
        if match:
            extras = {extra.strip() for extra in (match.group(2) or "").split(",") if extra.strip()}
            roots.append((match.group(1), extras))
    return roots


def render(image: str, source: list[str], pins: dict[str, str]) -> str:
    lines = [
        "# What the Astro Runtime image of the Dockerfile ships: Apache Airflow and its providers, as pip",
        "# constraints. `make lock` resolves requirements*.txt with these (uv pip compile --constraints), so the",
        "# local venv runs the Runtime's versions and a requirements.txt entry that needs a newer one fails to",
        "# lock instead of making the image build upgrade a Runtime package. tests/unit/test_runtime_pins.py",
        "# checks requirements.txt, the lock and the installed packages against this file.",
        "#",
        f"# runtime-image: {image}",
        *(f"# {line}" if line else "#" for line in source),
    ]
    order = sorted(pins, key=lambda name: (not name.startswith("apache-airflow"), "providers" in name, name))
    return "\n".join([*lines, *(f"{name}=={pins[name]}" for name in order)]) + "\n"


def from_freeze(freeze: Path, root: Path = ROOT) -> str:
    """Rewrite runtime-constraints.txt from the Runtime's freeze file; returns what was written."""
    freeze = Path(freeze)
    image = dockerfile_image(root)
    tag = runtime_tag(image)
    named = re.fullmatch(r"(?:runtime|freeze)-(.+)\.txt", freeze.name)
    if named and named.group(1) != tag:
        raise SystemExit(f"{freeze} is the freeze file of Runtime {named.group(1)}, the Dockerfile uses {tag}")
    pins = {name: version for name, version in read_pins(freeze).items() if RUNTIME_PACKAGE.match(name)}
    if "apache-airflow" not in pins:
        raise SystemExit(f"{freeze} pins no apache-airflow: not a Runtime freeze file")
    wanted = read_pins(root / "requirements-dev.txt").get("apache-airflow")
    if pins["apache-airflow"] != wanted:
        raise SystemExit(f"Runtime {tag} ships apache-airflow=={pins['apache-airflow']}, requirements-dev.txt pins "
                         f"{wanted}: move both together")
    digest = hashlib.sha256(freeze.read_bytes()).hexdigest()
    text = render(image, [f"source: the Runtime's freeze file {freeze.name} (sha256 {digest}),",
                          f"  https://cdn.astronomer.io/runtime-freeze/runtime-{tag}.txt - the packages",
                          "  `astro dev start --standalone` installs (astro-cli pkg/airflowrt/constraints.go).",
                          "  Written by `make lock RUNTIME_FREEZE=...`; Airflow and the providers only."], pins)
    (root / CONSTRAINTS).write_text(text)
    return text


def main(argv: list[str]) -> int:
    if argv[:1] == ["from-freeze"] and len(argv) == 2:
        text = from_freeze(Path(argv[1]))
        count = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        print(f"wrote {CONSTRAINTS}: {count} packages from {argv[1]}")
        return 0
    if argv == ["check"]:
        problems = check()
        for problem in problems:
            print(f"ERROR: {problem}", file=sys.stderr)
        if not problems:
            print(f"requirements.txt and requirements-dev.lock agree with {CONSTRAINTS} ({dockerfile_image()})")
        return 1 if problems else 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
