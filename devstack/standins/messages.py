"""What the stand-in server and its API modules exchange: a parsed request and the response to send.

Its own module so that server.py (which routes to every API module) and the API modules (which
build responses) both import it, and neither imports the other.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    fault: str | None = None
    config: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)  # per-API mutable state (e.g. credit counters)
    state_dir: Path | None = None  # where an API keeps what must survive a restart (None: memory only)


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json; charset=utf-8"})
    stream: Iterator[bytes] | None = None  # large bodies: sent chunked as they are produced...
    length: int | None = None  # ...or, when the stream's total size is known, with this Content-Length

    @classmethod
    def json(cls, status: int, payload, headers: dict[str, str] | None = None) -> Response:
        response = cls(status, json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode())
        response.headers.update(headers or {})
        return response
