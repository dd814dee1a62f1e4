"""Registers the project's custom timetables: Airflow serializes a DAG's timetable by import path and
accepts only built-in ones and those a plugin lists
(https://airflow.apache.org/docs/apache-airflow/stable/howto/timetable.html#timetable-registration)."""

from airflow.plugins_manager import AirflowPlugin

from include.timetables import MonthlyAfterMonthTimetable


class ProjectTimetables(AirflowPlugin):
    name = "project_timetables"
    timetables = [MonthlyAfterMonthTimetable]
