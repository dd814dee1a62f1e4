"""Pipeline logic shared by the DAGs: plain functions, testable without a scheduler."""
