"""Keeps `make run`'s processes up, as `restart: always` in docker compose or Astro's orchestrator do.

A component that exits (or a server that stops answering its health check) is restarted with
backoff, and the cause is logged: how it ended and the last line of its own log. Airflow's
components are restarted only once the servers they need answer again - a dag-processor started
while Postgres is still in crash recovery would die at once. A component that keeps dying (more
than `max_restarts` exits within `window_s`) is reported by name and only then does the stack stop.

Checks run in the supervisor's own loop, one component at a time: a restart waits for the
component to be ready before the next check, as `make run`'s start-up does.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from devstack.services import Service, ServiceError


class ComponentKeepsDying(ServiceError):
    """A component exited too often: the stack stops and names it."""


@dataclass
class _Watch:
    service: Service
    needs: list[Service]
    liveness: bool
    exits: deque = field(default_factory=deque)
    restart_at: float | None = None
    cause: str = ""
    unanswered_since: float | None = None
    last_probe: float = 0.0
    waiting_for: tuple[str, ...] = ()


def _answers(service: Service) -> bool:
    try:
        return bool(service.is_ready())
    except Exception:  # noqa: BLE001 - any probe failure means "does not answer"
        return False


class Supervisor:
    def __init__(self, log: Callable[[str], None], *, max_restarts: int = 5, window_s: float = 300.0,
                 backoff_s: Sequence[float] = (1, 2, 4, 8, 16, 30), unresponsive_s: float = 60.0,
                 probe_every_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.log = log
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_s = list(backoff_s)
        self.unresponsive_s = unresponsive_s
        self.probe_every_s = probe_every_s
        self.clock = clock
        self.watches: list[_Watch] = []

    def add(self, service: Service, needs: Sequence[Service] = (), liveness: bool = False) -> None:
        """Watch a started service. `needs`: services that must answer before it is restarted.
        `liveness`: also restart it when it stops answering its health check for unresponsive_s."""
        self.watches.append(_Watch(service, list(needs), liveness))

    def restarts(self, name: str) -> int:
        return sum(len(w.exits) for w in self.watches if w.service.name == name)

    def tick(self) -> None:
        """One pass over every component, in the order they were added (servers first)."""
        for watch in self.watches:
            now = self.clock()
            service = watch.service
            if watch.restart_at is None:
                if service.running():
                    self._probe(watch, now)
                    continue
                last_line = service.last_log_line()
                cause = service.exit_description() + (f" (last log line: {last_line})" if last_line else "")
                service.kill_group()
                self._schedule(watch, cause, now)
            if now < watch.restart_at:
                continue
            missing = tuple(need.name for need in watch.needs if not (need.running() and _answers(need)))
            if missing:
                if missing != watch.waiting_for:
                    self.log(f"{service.name}: waiting for {', '.join(missing)} to answer before restarting it")
                    watch.waiting_for = missing
                continue
            watch.waiting_for = ()
            self._restart(watch)

    def _probe(self, watch: _Watch, now: float) -> None:
        if not watch.liveness or now - watch.last_probe < self.probe_every_s:
            return
        watch.last_probe = now
        if _answers(watch.service):
            if watch.unanswered_since is not None:
                self.log(f"{watch.service.name} answers again after "
                         f"{now - watch.unanswered_since:.0f}s without answering")
            watch.unanswered_since = None
            return
        if watch.unanswered_since is None:
            watch.unanswered_since = now
            self.log(f"{watch.service.name} does not answer its health check: waiting up to "
                     f"{self.unresponsive_s:.0f}s before restarting it")
            return
        if now - watch.unanswered_since >= self.unresponsive_s:
            cause = f"did not answer its health check for {now - watch.unanswered_since:.0f}s"
            watch.unanswered_since = None
            watch.service.kill_group()
            self._schedule(watch, cause, now)

    def _schedule(self, watch: _Watch, cause: str, now: float) -> None:
        while watch.exits and now - watch.exits[0] > self.window_s:
            watch.exits.popleft()
        watch.exits.append(now)
        name = watch.service.name
        if len(watch.exits) > self.max_restarts:
            raise ComponentKeepsDying(
                f"{name} keeps dying: {len(watch.exits)} times within {self.window_s / 60:.0f} min, "
                f"last: {cause}. See {watch.service.log_path}"
            )
        delay = self.backoff_s[min(len(watch.exits), len(self.backoff_s)) - 1]
        watch.cause = cause
        watch.restart_at = now + delay
        self.log(f"{name} {cause}; restarting it in {delay:g}s "
                 f"(restart {len(watch.exits)} of at most {self.max_restarts} within {self.window_s / 60:.0f} min)")

    def _restart(self, watch: _Watch) -> None:
        service = watch.service
        started = self.clock()
        service.wait_ports_free()
        try:
            service.start()
        except ServiceError as exc:
            service.kill_group()
            self._schedule(watch, f"could not be restarted: {str(exc).splitlines()[0]}", self.clock())
            return
        watch.restart_at = None
        watch.last_probe = self.clock()
        self.log(f"{service.name} restarted and answering ({self.clock() - started:.1f}s)")

    def run(self, interval_s: float = 1.0) -> None:
        """Until a component keeps dying (ComponentKeepsDying) or the caller's signal handler raises."""
        while True:
            self.tick()
            time.sleep(interval_s)
