"""pytest imports test modules by basename (tests/unit and tests/e2e have no __init__.py): two modules of
the same name fail the whole collection with "import file mismatch" - seen once, caught here by name."""

from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_two_test_modules_share_a_name():
    names = Counter(path.name for path in (ROOT / "tests").rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
