"""Airflow's log server on 127.0.0.1 only, for the scheduler's and the triggerer's logs.

Airflow's own (`airflow.utils.serve_logs`, started by `airflow scheduler` and `airflow triggerer`)
binds every interface and has no setting for the address, so `make run` starts those two with
`--skip-serve-logs` and runs this instead: the same app, on loopback, on both ports. The UI fetches
a running task's log from `http://<task hostname>:<port>/log/...`, and the stack's hostname is
127.0.0.1 (`AIRFLOW__CORE__HOSTNAME_CALLABLE=devstack.log_server.loopback_hostname`).

    python -m devstack.log_server [--host 127.0.0.N] PORT [PORT ...]

Celery workers (make run EXECUTOR=celery) each get an address of their own, 127.0.0.2, .3, ...
(DEVSTACK_HOSTNAME): their hostname label, where their log server listens - all on the same port,
as separate machines would.
"""

from __future__ import annotations

import asyncio
import os
import sys

HOST = "127.0.0.1"


def loopback_hostname() -> str:
    """Airflow's hostname callable for the local stack: where this process's log server listens."""
    return os.environ.get("DEVSTACK_HOSTNAME") or HOST


async def _serve(host: str, ports: list[int]) -> None:
    import uvicorn  # noqa: PLC0415

    servers = [uvicorn.Server(uvicorn.Config("airflow.utils.serve_logs.log_server:get_app", factory=True,
                                             host=host, port=port, log_config=None, access_log=False))
               for port in ports]
    await asyncio.gather(*(server.serve() for server in servers))


def main(argv: list[str]) -> int:
    host = HOST
    if argv[:1] == ["--host"]:
        host, argv = argv[1], argv[2:]
    ports = [int(port) for port in argv]
    if not ports:
        print(__doc__, file=sys.stderr)
        return 2
    asyncio.run(_serve(host, ports))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
