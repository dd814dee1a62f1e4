"""Data-quality gates of the warehouse tables, with common-sql's SQLColumnCheckOperator and
SQLTableCheckOperator, run after every load on the rows that load wrote (`partition_clause`).

How a gate works: load -> check_columns + check_table -> publish. A failed check fails its task at
once (`retry_on_failure=False`: asking again does not improve data; a lost connection is still
retried) with each failed check's name and figures, and only `publish`, downstream of both, carries
the table's asset outlet - so a load that fails a check emits no asset event and nothing scheduled
on the table runs on it. The taxi months go further: the load stages the month in a table of its
own, the checks run there, and only publish swaps it into yellow_taxi_trips - a month that fails
never reaches the table. The exchange-rate and Strava rows are upserts of a run's few rows: they
stay in the warehouse (the load has committed them) and the red run says why.

The bounds, their sources and the TLC bad-row decision: README, "Assets and data quality".
Cheap to import (DAG parsing): the operators' module only, no database driver.
"""

from __future__ import annotations

from airflow.providers.common.sql.operators.sql import SQLColumnCheckOperator, SQLTableCheckOperator
from airflow.sdk.exceptions import AirflowException

from include.warehouse import WAREHOUSE_CONN_ID


class SQLTableCheckWithFiguresOperator(SQLTableCheckOperator):
    """SQLTableCheckOperator whose failure also states the figures behind each failed check.

    The stock operator reports a failed check as 0 and its statement. A check here may carry
    `figures` - {label: SQL expression over the same rows} - evaluated only when it fails, so the
    error reads e.g. `rows_match_parquet: rows=2999`, not just "failed". The checks are a template
    field too, so the statements it quotes carry their rendered figures (`COUNT(*) = 3000`)."""

    template_fields = (*SQLTableCheckOperator.template_fields, "checks")

    def __init__(self, *, aggregates_only: bool = False, **kwargs):
        # Read by _generate_sql_query, which the parent's __init__ calls.
        self.aggregates_only = aggregates_only
        super().__init__(**kwargs)

    def _generate_sql_query(self):
        """The stock query scans the rows once per check (a UNION ALL of subqueries). When every check
        is an aggregate over the same rows (aggregates_only), one scan computes them all and VALUES
        turns the one row into the (check_name, check_result) rows the operator reads."""
        if not self.aggregates_only or any("partition_clause" in check for check in self.checks.values()):
            return super()._generate_sql_query()
        where = f"WHERE {self.partition_clause}" if self.partition_clause else ""
        cases = ", ".join(f"CASE WHEN {check['check_statement']} THEN 1 ELSE 0 END AS {name}"
                          for name, check in self.checks.items())
        values = ", ".join(f"('{name}', {name})" for name in self.checks)
        # The DAG's own table and statements, formatted in as the stock template does.
        one_scan = f"SELECT {cases} FROM {self.table} {where}"  # noqa: S608
        unpivot = f"CROSS JOIN LATERAL (VALUES {values}) AS v(check_name, check_result)"
        return f"SELECT v.check_name, v.check_result FROM ({one_scan}) AS sq {unpivot}"  # noqa: S608

    def execute(self, context):
        try:
            return super().execute(context)
        except AirflowException as exc:
            lines = self._failed_check_figures()
            if not lines:
                raise
            where = f" where {self.partition_clause}" if self.partition_clause else ""
            raise type(exc)("\n".join([f"Data-quality checks failed on {self.table}{where}:", *lines, str(exc)])) \
                from None

    def _failed_check_figures(self) -> list[str]:
        lines = []
        for name, check in self.checks.items():
            if check.get("success") is not False:
                continue
            figures = check.get("figures") or {}
            shown = ""
            if figures:
                clauses = [c for c in (self.partition_clause, check.get("partition_clause")) if c]
                where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
                selected = ", ".join(f"{expression} AS {label}" for label, expression in figures.items())
                row = self.get_db_hook().get_first(f"SELECT {selected} FROM {self.table}{where}")  # noqa: S608
                shown = ", ".join(f"{label}={value}" for label, value in zip(figures, row, strict=True)) + "; "
            lines.append(f"  {name}: {shown}must hold: {check['check_statement']}")
        return lines


def column_checks(table: str, column_mapping: dict, partition_clause: str,
                  task_id: str = "check_columns", described_as: str | None = None) -> SQLColumnCheckOperator:
    """Per-column checks (null_check, unique_check, min, max) on the rows of one load. `table` may be
    a template (a staged table named by the load); `described_as` then names it in the task's docs."""
    return SQLColumnCheckOperator(
        task_id=task_id, conn_id=WAREHOUSE_CONN_ID, table=table, column_mapping=column_mapping,
        partition_clause=partition_clause, retry_on_failure=False,
        doc_md=f"Column checks on the rows of `{described_as or table}` this run loaded; see include/quality.py.")


def table_checks(table: str, checks: dict, partition_clause: str, task_id: str = "check_table",
                 described_as: str | None = None, aggregates_only: bool = False) -> SQLTableCheckWithFiguresOperator:
    """Whole-partition checks (row counts, shares of out-of-bounds rows) on the rows of one load;
    aggregates_only: every check statement is an aggregate, so one scan answers them all."""
    return SQLTableCheckWithFiguresOperator(
        task_id=task_id, conn_id=WAREHOUSE_CONN_ID, table=table, checks=checks,
        partition_clause=partition_clause, retry_on_failure=False, aggregates_only=aggregates_only,
        doc_md=f"Table checks on the rows of `{described_as or table}` this run loaded; see include/quality.py.")


def _xcom(task_id: str, key: str) -> str:
    return f"{{{{ ti.xcom_pull(task_ids='{task_id}')['{key}'] }}}}"


# -- exchange_rates ---------------------------------------------------------------------------------
# USD/EUR since the euro began: the ECB's EUR/USD reference rate ranged from 0.8252 (2000-10-26) to
# 1.5990 (2008-07-15), i.e. USD/EUR 0.63 to 1.21. A rate outside [0.5, 1.5] is a broken quote, not a
# market move: TwelveData has served prices 1,000 and 10,000 times too small (twelvedata-python#67,
# #69). A rate <= 0 never gets this far (the fetch and the table's CHECK refuse it).
RATE_BOUNDS = {"USD/EUR": (0.5, 1.5)}


def exchange_rate_checks(symbol: str, record_task_id: str):
    """(column checks, table checks) of the one row a run upserts: its key (symbol, rate_at) from
    the record the extract task pushed."""
    low, high = RATE_BOUNDS[symbol]
    partition = f"symbol = '{symbol}' AND rate_at = '{_xcom(record_task_id, 'rate_at')}'"
    columns = column_checks("exchange_rates", {
        "rate": {"null_check": {"equal_to": 0}, "min": {"geq_to": low}, "max": {"leq_to": high}},
        "rate_at": {"null_check": {"equal_to": 0}, "unique_check": {"equal_to": 0}},
    }, partition)
    table = table_checks("exchange_rates", {
        # One record in, one row for its key: the upsert neither lost nor duplicated it.
        "one_row_per_record": {"check_statement": "COUNT(*) = 1", "figures": {"rows": "COUNT(*)"}},
    }, partition)
    return columns, table


# -- strava_activity --------------------------------------------------------------------------------
def strava_activity_checks(load_task_id: str):
    """The activities that started inside the window the run read (Strava's after/before, both
    exclusive) against the raw object's distinct ids, which the load task pushes as `listed`."""
    partition = (f"start_date > to_timestamp({_xcom(load_task_id, 'after')}) "
                 f"AND start_date < to_timestamp({_xcom(load_task_id, 'before')})")
    # Distances (m), times (s) and speeds (m/s) cannot be negative. A manual activity has max_speed 0,
    # a GPS glitch an absurd one: both real, so no upper bound and no max >= average rule.
    columns = column_checks("strava_activity", {
        "id": {"null_check": {"equal_to": 0}, "unique_check": {"equal_to": 0}},
        "distance": {"min": {"geq_to": 0}},
        "moving_time": {"min": {"geq_to": 0}},
        "average_speed": {"min": {"geq_to": 0}},
        "max_speed": {"min": {"geq_to": 0}},
    }, partition)
    table = table_checks("strava_activity", {
        "rows_match_raw_object": {"check_statement": f"COUNT(*) = {_xcom(load_task_id, 'listed')}",
                                  "figures": {"rows": "COUNT(*)"}},
    }, partition)
    return columns, table


# -- yellow_taxi_trips ------------------------------------------------------------------------------
# Bounds of a plausible trip (TLC data dictionary: fare_amount is the meter's time-and-distance fare,
# trip_distance the taximeter's miles; payment types 3 "No charge", 4 "Dispute", 6 "Voided trip" are
# where negative amounts come from). Real months break every one of them - 2021-01 as published has
# pickups from 2008-12-31 to 2021-02-22, distances up to 263,163 mi and fares from -490 to 6,960.50 -
# so rows outside are KEPT and COUNTED (the publish event's `out_of_bounds`), and a month is rejected
# only when a bound is broken by more than TLC_MAX_OUT_OF_BOUNDS_SHARE of its rows: that is a broken
# file (shifted columns, a unit or sign change, the wrong month), not a city's bad-but-real trips.
TLC_OUT_OF_BOUNDS = {
    "fare": "fare_amount < 0 OR fare_amount > 1000",
    "distance": "trip_distance < 0 OR trip_distance > 500",
    "duration": "tpep_dropoff_datetime < tpep_pickup_datetime "
                "OR tpep_dropoff_datetime > tpep_pickup_datetime + interval '24 hours'",
    "pickup_outside_month": "date_trunc('month', tpep_pickup_datetime)::date <> data_month",
}
TLC_MAX_OUT_OF_BOUNDS_SHARE = 0.05
# Taxi zones: 1-263 are NYC's zones, 264 "Unknown" and 265 "Outside of NYC" (taxi_zone_lookup.csv).
TLC_ZONE_IDS = (1, 265)


def taxi_month_checks(load_task_id: str):
    """The staged month against the parquet file it was loaded from (the load task pushes the month,
    its staged table and the file's row count, read from its footer)."""
    partition = f"data_month = DATE '{_xcom(load_task_id, 'month')}-01'"
    staged = _xcom(load_task_id, "staged_table")
    described = "yellow_taxi_trips_<YYYY_MM>_staged (the month before publish swaps it in)"
    columns = column_checks(staged, {
        # A trip's time is its key to a day: without it the trip belongs nowhere.
        "tpep_pickup_datetime": {"null_check": {"equal_to": 0}},
        "tpep_dropoff_datetime": {"null_check": {"equal_to": 0}},
    }, partition, described_as=described)
    low, high = TLC_ZONE_IDS
    checks = {
        "rows_match_parquet": {"check_statement": f"COUNT(*) = {_xcom(load_task_id, 'rows')}",
                               "figures": {"rows": "COUNT(*)"}},
    }
    for column, name in (('"PULocationID"', "pickup_zone_known"), ('"DOLocationID"', "dropoff_zone_known")):
        checks[name] = {
            "check_statement": f"COUNT({column}) = COUNT(*) AND MIN({column}) >= {low} AND MAX({column}) <= {high}",
            "figures": {"nulls": f"COUNT(*) - COUNT({column})", "min": f"MIN({column})", "max": f"MAX({column})"},
        }
    for bound, predicate in TLC_OUT_OF_BOUNDS.items():
        checks[f"{bound}_out_of_bounds_share"] = {
            "check_statement": f"COUNT(*) FILTER (WHERE {predicate}) <= {TLC_MAX_OUT_OF_BOUNDS_SHARE} * COUNT(*)",
            "figures": {"out_of_bounds": f"COUNT(*) FILTER (WHERE {predicate})", "rows": "COUNT(*)"},
        }
    # All aggregates over the month: one scan of 2M rows instead of eight.
    return columns, table_checks(staged, checks, partition, described_as=described, aggregates_only=True)
