"""DAG files are wiring: parsing one must not pull in data or cloud libraries (issue #2).

The dag-processor re-parses every file every refresh interval; pandas alone costs ~0.5 s. Each
file is parsed in a fresh interpreter and the heavy modules are looked for in sys.modules.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY_MODULES = ("pandas", "pyarrow", "boto3", "botocore", "twelvedata", "requests_oauthlib", "s3fs", "numpy")
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))

_CHILD = r"""
import json, sys
from airflow.models import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = [m for m in json.loads(sys.argv[2]) if m in sys.modules]
print(json.dumps({"dags": sorted(bag.dag_ids), "errors": list(bag.import_errors.values()), "heavy": heavy}))
"""


def test_there_are_dag_files():
    assert DAG_FILES


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_parsing_a_dag_file_imports_no_heavy_module(path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", _CHILD, str(path), json.dumps(HEAVY_MODULES)],
                            capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["dags"], f"{path.name} defines no DAG"
    assert not report["errors"]
    assert report["heavy"] == [], f"{path.name} imports {report['heavy']} at parse time"


def test_the_check_catches_a_heavy_import(tmp_path):
    """The probe itself can fail: a DAG file importing pandas at module level is caught."""
    bad = tmp_path / "bad_dag.py"
    bad.write_text(
        "import pandas\nfrom airflow.sdk import DAG\nwith DAG(dag_id='bad', schedule=None):\n    pass\n"
    )
    result = subprocess.run([sys.executable, "-c", _CHILD, str(bad), json.dumps(HEAVY_MODULES)],
                            capture_output=True, text=True, check=True)
    assert "pandas" in json.loads(result.stdout.strip().splitlines()[-1])["heavy"]
