"""Data-quality gates of the warehouse tables, with common-sql's SQLColumnCheckOperator and
SQLTableCheckOperator, run after every load on the rows that load wrote (`partition_clause`).

How a gate works: load -> check_columns + check_table -> publish. A failed check fails its task at
once (`retry_on_failure=False`: asking again does not improve data; a lost connection is still
retried) with each failed check's name and figures, and only `publish`, downstream of both, carries
the table's asset outlet - so a load that fails a check emits no asset event and nothing scheduled
on the table runs on it. Rows that fail never reach the table readers use either: every load
stages its rows in a table of its own (`<table>_staged`, or a month's staged partition for
yellow_taxi_trips), the checks run there, and only publish moves them in, in one transaction. The
failure names the staged table and rows, which stay there for inspection until a re-run replaces
them.

The bounds, their sources and the TLC bad-row decision: docs/assets-and-data-quality.md.
Cheap to import (DAG parsing): the operators' module only, no database driver.
"""

from __future__ import annotations

from airflow.providers.common.sql.operators.sql import SQLColumnCheckOperator, SQLTableCheckOperator
from airflow.sdk.exceptions import AirflowException

from include.warehouse import WAREHOUSE_CONN_ID


def _failed_on(table: str, partition_clause: str | None, published_table: str | None) -> str:
    where = f" where {partition_clause}" if partition_clause else ""
    kept = (f" Those rows stay in {table} for inspection; {published_table} was not changed (publish moves rows "
            "only after every check passed)." if published_table else "")
    return f"Data-quality checks failed on {table}{where}.{kept}"


class SQLColumnCheckWithContextOperator(SQLColumnCheckOperator):
    """SQLColumnCheckOperator whose failure also says which rows failed and where they are kept
    (the stock message names the column and check, not the table or the rows)."""

    def __init__(self, *, published_table: str | None = None, **kwargs):
        self.published_table = published_table
        super().__init__(**kwargs)

    def execute(self, context):
        try:
            return super().execute(context)
        except AirflowException as exc:
            raise type(exc)(f"{_failed_on(self.table, self.partition_clause, self.published_table)}\n{exc}") \
                from None


class SQLTableCheckWithFiguresOperator(SQLTableCheckOperator):
    """SQLTableCheckOperator whose failure also states the figures behind each failed check.

    The stock operator reports a failed check as 0 and its statement. A check here may carry
    `figures` - {label: SQL expression over the same rows} - evaluated only when it fails, so the
    error reads e.g. `rows_match_parquet: rows=2999`, not just "failed". The checks are a template
    field too, so the statements it quotes carry their rendered figures (`COUNT(*) = 3000`)."""

    template_fields = (*SQLTableCheckOperator.template_fields, "checks")

    def __init__(self, *, aggregates_only: bool = False, published_table: str | None = None, **kwargs):
        # Read by _generate_sql_query, which the parent's __init__ calls.
        self.aggregates_only = aggregates_only
        self.published_table = published_table
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
                raise type(exc)(f"{_failed_on(self.table, self.partition_clause, self.published_table)}\n{exc}") \
                    from None
            heading = _failed_on(self.table, self.partition_clause, self.published_table)
            raise type(exc)("\n".join([heading, *lines, str(exc)])) from None

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


def column_checks(table: str, column_mapping: dict, partition_clause: str, task_id: str = "check_columns",
                  described_as: str | None = None, published_table: str | None = None) -> SQLColumnCheckOperator:
    """Per-column checks (null_check, unique_check, min, max) on the rows of one load, staged in
    `table` (may be a template: a staged table named by the load; `described_as` then names it in
    the task's docs) before publish moves them into `published_table`."""
    return SQLColumnCheckWithContextOperator(
        task_id=task_id, conn_id=WAREHOUSE_CONN_ID, table=table, column_mapping=column_mapping,
        partition_clause=partition_clause, retry_on_failure=False, published_table=published_table,
        doc_md=f"Column checks on the rows of `{described_as or table}` this run loaded; see include/quality.py.")


def table_checks(table: str, checks: dict, partition_clause: str, task_id: str = "check_table",
                 described_as: str | None = None, aggregates_only: bool = False,
                 published_table: str | None = None) -> SQLTableCheckWithFiguresOperator:
    """Whole-partition checks (row counts, shares of out-of-bounds rows) on the rows of one load;
    aggregates_only: every check statement is an aggregate, so one scan answers them all."""
    return SQLTableCheckWithFiguresOperator(
        task_id=task_id, conn_id=WAREHOUSE_CONN_ID, table=table, checks=checks,
        partition_clause=partition_clause, retry_on_failure=False, aggregates_only=aggregates_only,
        published_table=published_table,
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
    """(column checks, table checks) of the one row a run stages in exchange_rates_staged: its key
    (symbol, rate_at) from the record the extract task pushed."""
    low, high = RATE_BOUNDS[symbol]
    partition = f"symbol = '{symbol}' AND rate_at = '{_xcom(record_task_id, 'rate_at')}'"
    columns = column_checks("exchange_rates_staged", {
        "rate": {"null_check": {"equal_to": 0}, "min": {"geq_to": low}, "max": {"leq_to": high}},
        "rate_at": {"null_check": {"equal_to": 0}, "unique_check": {"equal_to": 0}},
    }, partition, published_table="exchange_rates")
    table = table_checks("exchange_rates_staged", {
        # One record in, one row for its key: staging neither lost nor duplicated it.
        "one_row_per_record": {"check_statement": "COUNT(*) = 1", "figures": {"rows": "COUNT(*)"}},
    }, partition, published_table="exchange_rates")
    return columns, table


# -- strava_activity --------------------------------------------------------------------------------
def strava_activity_checks(load_task_id: str):
    """The activities a run staged in strava_activity_staged (keyed by the raw object they came
    from, which the load task pushes as `raw_key`) against that object's distinct ids (`listed`)
    and the window the run read (Strava's after/before, both exclusive)."""
    partition = f"raw_key = '{_xcom(load_task_id, 'raw_key')}'"
    # Distances (m), times (s) and speeds (m/s) cannot be negative. A manual activity has max_speed 0,
    # a GPS glitch an absurd one: both real, so no upper bound and no max >= average rule.
    columns = column_checks("strava_activity_staged", {
        "id": {"null_check": {"equal_to": 0}, "unique_check": {"equal_to": 0}},
        "distance": {"min": {"geq_to": 0}},
        "moving_time": {"min": {"geq_to": 0}},
        "average_speed": {"min": {"geq_to": 0}},
        "max_speed": {"min": {"geq_to": 0}},
    }, partition, published_table="strava_activity")
    outside = (f"NOT (start_date > to_timestamp({_xcom(load_task_id, 'after')}) "
               f"AND start_date < to_timestamp({_xcom(load_task_id, 'before')}))")
    table = table_checks("strava_activity_staged", {
        "rows_match_raw_object": {"check_statement": f"COUNT(*) = {_xcom(load_task_id, 'listed')}",
                                  "figures": {"rows": "COUNT(*)"}},
        # Publish deletes the window's activities Strava no longer lists: an activity from outside the
        # window would make that wrong.
        "started_in_window": {"check_statement": f"COUNT(*) FILTER (WHERE {outside}) = 0",
                              "figures": {"outside_window": f"COUNT(*) FILTER (WHERE {outside})"}},
    }, partition, published_table="strava_activity")
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
# The congestion relief zone toll (cbd_congestion_fee, $0.75 a yellow-taxi trip into, out of or within
# Manhattan south of 60th St) began on 2025-01-05 (MTA; the TLC's data dictionary for 2025 and its
# files: the column appears in 2025-01). Before that month no file has the column.
CBD_FEE_FIRST_MONTH, CBD_FEE_START = "2025-01", "2025-01-05"
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
    }, partition, described_as=described, published_table="yellow_taxi_trips")
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
    # The fee's era: NULL before its first month; within it never charged before the start day; and a
    # month of the fee's era from the TLC's files has trips that carry it (the zone is Manhattan's core).
    before_era = f"data_month < DATE '{CBD_FEE_FIRST_MONTH}-01'"
    charged = "cbd_congestion_fee <> 0"
    checks["cbd_congestion_fee_matches_its_era"] = {
        "check_statement": f"COUNT(cbd_congestion_fee) FILTER (WHERE {before_era}) = 0 "
                           f"AND COUNT(*) FILTER (WHERE {charged} AND tpep_pickup_datetime < TIMESTAMP "
                           f"'{CBD_FEE_START}') = 0 "
                           f"AND (bool_and({before_era}) OR COUNT(*) FILTER (WHERE {charged}) > 0)",
        "figures": {"fee_before_its_month": f"COUNT(cbd_congestion_fee) FILTER (WHERE {before_era})",
                    "charged_before_start": f"COUNT(*) FILTER (WHERE {charged} AND tpep_pickup_datetime < "
                                            f"TIMESTAMP '{CBD_FEE_START}')",
                    "charged": f"COUNT(*) FILTER (WHERE {charged})"},
    }
    for bound, predicate in TLC_OUT_OF_BOUNDS.items():
        checks[f"{bound}_out_of_bounds_share"] = {
            "check_statement": f"COUNT(*) FILTER (WHERE {predicate}) <= {TLC_MAX_OUT_OF_BOUNDS_SHARE} * COUNT(*)",
            "figures": {"out_of_bounds": f"COUNT(*) FILTER (WHERE {predicate})", "rows": "COUNT(*)"},
        }
    # All aggregates over the month: one scan of 2M rows instead of eight.
    return columns, table_checks(staged, checks, partition, described_as=described, aggregates_only=True,
                                 published_table="yellow_taxi_trips")


# -- taxi_daily_weather -----------------------------------------------------------------------------
# A month is ~30 rows built by one mapped task, so the gate runs inside it (include/taxi_weather.py:
# stage, check, publish) with the same named checks and figures as the operators above.
# Bounds: New York City's records (NWS, Central Park) are -26.1 °C (-15 °F, 1934-02-09) and 41.1 °C
# (106 °F, 1936-07-09); New York State's 24-hour rainfall record is 345 mm (13.57 in, Islip,
# 2014-08-12/13). A day outside [-30, 45] °C or [0, 400] mm is a unit or parsing fault (kelvin,
# Fahrenheit in summer, inches), not weather.
NYC_TEMPERATURE_BOUNDS_C = (-30.0, 45.0)
NYC_DAILY_PRECIPITATION_MAX_MM = 400.0


def taxi_daily_weather_checks(in_month_trips: int) -> dict:
    """The checks of one month's staged days: `in_month_trips` is the month's trips with a pickup in
    the month, counted in yellow_taxi_trips."""
    low, high = NYC_TEMPERATURE_BOUNDS_C
    unordered = ("COUNT(*) FILTER (WHERE NOT (temperature_min <= temperature_mean "
                 "AND temperature_mean <= temperature_max))")
    return {
        "trips_match_yellow_taxi_trips": {"check_statement": f"SUM(trips) = {int(in_month_trips)}",
                                          "figures": {"trips": "SUM(trips)"}},
        "temperature_plausible_for_new_york": {
            "check_statement": f"MIN(temperature_min) >= {low} AND MAX(temperature_max) <= {high}",
            "figures": {"min": "MIN(temperature_min)", "max": "MAX(temperature_max)"}},
        "temperatures_ordered": {"check_statement": f"{unordered} = 0", "figures": {"days": unordered}},
        "precipitation_plausible": {
            "check_statement": f"MIN(precipitation) >= 0 AND MAX(precipitation) <= {NYC_DAILY_PRECIPITATION_MAX_MM}",
            "figures": {"min": "MIN(precipitation)", "max": "MAX(precipitation)"}},
        "weather_hours_of_a_new_york_day": {  # 23 on the spring-forward day, 25 on the fall-back day
            "check_statement": "MIN(weather_hours) >= 23 AND MAX(weather_hours) <= 25",
            "figures": {"min": "MIN(weather_hours)", "max": "MAX(weather_hours)"}},
    }


def failed_checks(cur, table: str, where: str, params: dict, checks: dict) -> list[str]:
    """Evaluate aggregate `checks` ({name: {check_statement, figures}}) over `table` WHERE `where`
    in one scan on cursor `cur`; returns one line per failed check with its figures (empty: all
    passed)."""
    cases = ", ".join(f"CASE WHEN {c['check_statement']} THEN 1 ELSE 0 END" for c in checks.values())
    figures = [(name, label, expression) for name, c in checks.items() for label, expression in c["figures"].items()]
    selected = ", ".join([cases, *(expression for _, _, expression in figures)])
    cur.execute(f"SELECT {selected} FROM {table} WHERE {where}", params)  # noqa: S608 - our own constants
    row = cur.fetchone()
    results, values = row[:len(checks)], row[len(checks):]
    lines = []
    for (name, check), passed in zip(checks.items(), results, strict=True):
        if passed != 1:
            shown = ", ".join(f"{label}={value}" for (n, label, _), value in zip(figures, values, strict=True)
                              if n == name)
            lines.append(f"  {name}: {shown}; must hold: {check['check_statement']}")
    return lines
