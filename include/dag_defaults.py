"""default_args every DAG of this project starts from, and the worker queues some tasks need."""

import os
from datetime import timedelta

DEFAULT_ARGS = {
    "owner": "data-engineering",
    # Third-party APIs fail transiently (429, 503, dropped connections): retry with backoff.
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}

# Under the CeleryExecutor a task may run on any worker. Tasks that hand each other files on local
# disk (check_dag) go to this queue, which ONE worker serves, so they share a machine by design, not
# by luck: `make run EXECUTOR=celery` sets LOCAL_FILES_QUEUE=local-files and its worker-1 serves it;
# on Astro, a worker queue of that name with at most one worker (docs/executors.md). The
# LocalExecutor ignores queues. Read when the DAG is parsed.
LOCAL_FILES_QUEUE = os.environ.get("LOCAL_FILES_QUEUE") or "default"
