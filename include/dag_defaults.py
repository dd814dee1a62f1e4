"""default_args every DAG of this project starts from."""

from datetime import timedelta

DEFAULT_ARGS = {
    "owner": "data-engineering",
    # Third-party APIs fail transiently (429, 503, dropped connections): retry with backoff.
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}
