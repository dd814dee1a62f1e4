"""include/assets.py: every lasting output declared once, with the URI Airflow itself would make."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from airflow.sdk import Asset

ROOT = Path(__file__).resolve().parents[2]


def _declared() -> dict[str, Asset]:
    import include.assets as assets

    return {name: value for name, value in vars(assets).items() if isinstance(value, Asset)}


def test_each_uri_is_what_airflow_normalizes_it_to():
    """The assets skip Airflow's normalization at parse time (it imports boto3): their URIs must be
    the normalized ones, or producers and consumers would name different assets."""
    for name, asset in _declared().items():
        assert Asset(name=asset.name, uri=asset.uri, group=asset.group) == asset, name
        assert asset.normalized_uri == asset.uri, name


def test_names_and_uris_are_unique_and_follow_the_identity_rule():
    declared = list(_declared().values())
    assert len({a.name for a in declared}) == len({a.uri for a in declared}) == len(declared)
    for asset in declared:
        if asset.group == "lake":
            assert asset.uri.startswith(("s3://weather-data/", "s3://market-data/", "s3://lifedata/", "s3://nyc-tlc/",
                                         "s3://models/"))
        else:
            assert asset.group == "warehouse" and asset.uri.startswith("postgres://warehouse-db:5432/warehouse/public/")
            assert asset.name == "warehouse." + asset.uri.rsplit("/", 1)[1]


def test_importing_the_assets_loads_no_aws_client():
    code = "import sys, include.assets; print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_the_taxi_table_checks_scan_the_staged_month_once():
    """Eight aggregate checks over 2M rows: one scan, not the stock operator's one per check."""
    from include.quality import taxi_month_checks

    _, table = taxi_month_checks("load")

    assert table.sql.count(" FROM ") == 3  # the operator's wrapper, the unpivot, the one scan
    assert table.sql.count("xcom_pull(task_ids='load')['staged_table']") == 1
    assert "UNION ALL" not in table.sql
