"""include/weather.py without a scheduler: clipping, CSV format, atomic local writes, run stamps."""

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from include.runs import run_stamp
from include.weather import clip_temperatures, to_csv_bytes, write_csv_file


def test_clip_bounds_and_keeps_missing_values_and_time_columns():
    hourly = {"time": ["t1", "t2", "t3", "t4"], "time_utc": ["u1", "u2", "u3", "u4"],
              "temperature": [-35.5, 12.25, None, 51.0]}

    assert clip_temperatures(hourly) == {"time": ["t1", "t2", "t3", "t4"], "time_utc": ["u1", "u2", "u3", "u4"],
                                         "temperature": [-20.0, 12.25, None, 50.0]}


def test_clip_rejects_non_numeric_values():
    with pytest.raises(ValueError):
        clip_temperatures({"time": ["t1"], "temperature": ["warm"]})


def test_csv_has_header_unambiguous_times_and_empty_field_for_missing():
    csv = to_csv_bytes({"time": ["2025-11-02T01:00-04:00", "2025-11-02T01:00-05:00"],
                        "time_utc": ["2025-11-02T05:00+00:00", "2025-11-02T06:00+00:00"], "temperature": [1.5, None]})

    assert csv == (b"time,time_utc,temperature\n2025-11-02T01:00-04:00,2025-11-02T05:00+00:00,1.5\n"
                   b"2025-11-02T01:00-05:00,2025-11-02T06:00+00:00,\n")


def _run(logical_date, run_after=None, dag_id="some_dag"):
    return SimpleNamespace(dag_id=dag_id, run_id="r", logical_date=logical_date, run_after=run_after)


def test_run_stamp_is_the_logical_date_in_utc():
    new_york = timezone(timedelta(hours=-5))
    assert run_stamp(_run(datetime(2025, 1, 1, 19, 0, tzinfo=new_york))) == "20250102T000000"


def test_manual_run_without_logical_date_uses_run_after():
    assert run_stamp(_run(None, datetime(2025, 7, 4, 12, 30, 5, tzinfo=UTC))) == "20250704T123005"


def test_write_is_atomic_and_a_rewrite_replaces(tmp_path):
    run = _run(datetime(2025, 1, 1, tzinfo=UTC))
    rows = {"time": ["a"], "time_utc": ["u"], "temperature": [1.0]}

    first = write_csv_file(rows, run, directory=tmp_path)
    second = write_csv_file({"time": ["a"], "time_utc": ["u"], "temperature": [2.0]}, run, directory=tmp_path)

    assert first == second == str(tmp_path / "some_dag" / "20250101T000000.csv")
    assert sorted(p.name for p in (tmp_path / "some_dag").iterdir()) == ["20250101T000000.csv"]
    assert (tmp_path / "some_dag" / "20250101T000000.csv").read_text() == "time,time_utc,temperature\na,u,2.0\n"


def test_failed_write_leaves_the_previous_file_untouched(tmp_path):
    run = _run(datetime(2025, 1, 1, tzinfo=UTC))
    write_csv_file({"time": ["a"], "time_utc": ["u"], "temperature": [1.0]}, run, directory=tmp_path)

    with pytest.raises(KeyError):
        write_csv_file({"time": ["a"], "time_utc": ["u"]}, run, directory=tmp_path)  # no temperature column

    assert sorted(p.name for p in (tmp_path / "some_dag").iterdir()) == ["20250101T000000.csv"]
    assert (tmp_path / "some_dag" / "20250101T000000.csv").read_text() == "time,time_utc,temperature\na,u,1.0\n"
