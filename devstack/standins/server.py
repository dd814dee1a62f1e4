"""The stand-in HTTP server: routing, fault injection and the control endpoints.

Control endpoints (JSON), used by tests and handy when poking at a DAG by hand:

    GET    /_standin/health            -> {"status": "ok", "apis": [...]}
    POST   /_standin/faults            body {"path": "/v1/archive", "kind": "http_429", "times": 1}
    DELETE /_standin/faults            clear every fault
    GET    /_standin/requests          requests served so far (method, path, query; newest last)
    DELETE /_standin/requests          forget them
    GET    /_standin/config            behaviour settings of the APIs (e.g. TwelveData credits a minute)
    POST   /_standin/config            body {"twelvedata_credits_per_minute": 100}: change some of them
    DELETE /_standin/config            back to the defaults (and forget counted credits)

A fault applies to the next `times` requests whose path starts with `path` (`times` null: until
cleared). Kinds every API understands: `http_<status>` (the API's own error body for that status)
`truncated` (a complete HTTP answer whose body stops half-way), `dropped` (the connection closes
half-way through a body whose Content-Length - or chunked encoding - promised more) and
`empty_body` (HTTP 200 with nothing in it), `not_json` (HTTP 200 with an HTML page) and
`streaming_error` (half the body, then Open-Meteo's "Unexpected error while streaming data:
timeoutReached"); on a streamed body (a TLC file) they cut the stream
for real, at half its length or, for a stream of unknown length, after STREAM_CUT_BYTES. Other kinds
are API-specific (Open-Meteo: `unequal_lengths`, `all_null`, `kelvin`; TwelveData: `body_<code>` - its
error body with HTTP 200 - `empty` and `rate_divided_1000`; Strava: `invalid_record`; TLC:
`truncated_gzip`, `missing_column`, `non_numeric_fare`, `null_pickup_time`, `out_of_bounds_every_<n>`; TLC
publisher: `parquet_unknown_column`, `parquet_missing_column`, `parquet_wrong_type`,
`parquet_fractional_passenger_count`). `slow_<seconds>` answers normally after that many seconds.

APIs: Open-Meteo, TwelveData, Strava, the course mirror's TLC CSV files (tlc.py), the TLC publisher's parquet
files as CloudFront serves them, `/trip-data/yellow_tripdata_YYYY-MM.parquet` (tlc_publisher.py: schema eras,
publication two months later on the stand-in's clock `tlc_now`, 403 before, republishing, ETag / Range /
HEAD), and SWAPI.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from devstack.standins import open_meteo, strava, swapi, tlc, tlc_publisher, twelvedata
from devstack.standins.messages import Request, Response

STREAM_CUT_BYTES = 256 << 10  # where `truncated` / `dropped` cut a stream of unknown length
CUT_FAULTS = ("truncated", "dropped", "empty_body")


@dataclass
class Fault:
    path: str
    kind: str
    remaining: int | None


# Each API module exposes PREFIXES (path prefixes it owns), handle(Request) -> Response and
# error(status) -> Response. Later pipelines add their modules here.
APIS = [open_meteo, twelvedata, strava, tlc, tlc_publisher, swapi]


def default_config() -> dict:
    config = {}
    for api in APIS:
        config.update(getattr(api, "DEFAULT_CONFIG", {}))
    return config


class StandInServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, state_dir: Path | None = None):
        super().__init__(address, Handler)
        # Each API gets its own sub-folder for what must outlive the process (issued tokens,
        # generated files), as the real services keep theirs across restarts.
        self.state_dir = Path(state_dir) if state_dir else None
        self.lock = threading.Lock()
        self.faults: list[Fault] = []
        self.requests: list[dict] = []
        self.config: dict = default_config()
        self.api_state: dict[str, dict] = {api.NAME: {} for api in APIS}

    def take_fault(self, path: str) -> str | None:
        with self.lock:
            for fault in self.faults:
                if path.startswith(fault.path) and (fault.remaining is None or fault.remaining > 0):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault.kind
        return None


def _api_for(path: str):
    for api in APIS:
        if any(path.startswith(prefix) for prefix in api.PREFIXES):
            return api
    return None


class Handler(BaseHTTPRequestHandler):
    server: StandInServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        # Query strings carry API keys: log the path only.
        path = urlsplit(self.path).path
        print(f"{self.command} {path} -> {args[1] if len(args) > 1 else ''}", flush=True)

    def _read_request(self) -> Request:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        return Request(self.command, parts.path, query, dict(self.headers.items()), body)

    def _send(self, response: Response) -> None:
        if response.stream is not None:
            self._send_stream(response)
            return
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _send_stream(self, response: Response, cut: str | None = None) -> None:
        """A streamed body, chunked or with its Content-Length. `cut` (a fault of CUT_FAULTS) stops
        it for real: `truncated` ends a complete-looking answer early (a short Content-Length, or
        the chunked terminator), `dropped` closes the connection before the promised end,
        `empty_body` sends none of it."""
        limit = None
        if cut == "empty_body":
            limit = 0
        elif cut in ("truncated", "dropped"):
            limit = response.length // 2 if response.length is not None else STREAM_CUT_BYTES
        declared = response.length
        if cut in ("truncated", "empty_body") and declared is not None:
            declared = limit  # a complete answer, just shorter than the file
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        chunked = declared is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(declared))
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            sent = 0
            for chunk in response.stream:
                if limit is not None:
                    chunk = chunk[: max(limit - sent, 0)]
                if not chunked:
                    chunk = chunk[: declared - sent]  # never more than the promised length
                if chunk and chunked:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                elif chunk:
                    self.wfile.write(chunk)
                sent += len(chunk)
                if limit is not None and sent >= limit:
                    break
            if cut == "dropped":
                self.wfile.flush()
                self.close_connection = True  # no terminator, fewer bytes than promised: a cut-off download
            elif chunked:
                self.wfile.write(b"0\r\n\r\n")
            elif sent != declared:
                self.close_connection = True  # fewer bytes than promised: the client sees a cut-off body
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            close = getattr(response.stream, "close", None)
            if close is not None:
                close()  # a generator cut short releases its file or generation thread

    def _control(self, request: Request) -> Response:
        server = self.server
        if request.path == "/_standin/health":
            return Response.json(200, {"status": "ok", "apis": [api.NAME for api in APIS]})
        if request.path == "/_standin/faults":
            if request.method == "DELETE":
                with server.lock:
                    server.faults.clear()
                return Response.json(200, {"faults": []})
            if request.method == "POST":
                spec = json.loads(request.body or b"{}")
                fault = Fault(spec["path"], spec["kind"], spec.get("times", 1))
                with server.lock:
                    server.faults.append(fault)
                return Response.json(201, fault.__dict__)
            with server.lock:
                return Response.json(200, {"faults": [f.__dict__ for f in server.faults]})
        if request.path == "/_standin/config":
            with server.lock:
                if request.method == "DELETE":
                    server.config = default_config()
                    for state in server.api_state.values():
                        state.clear()
                elif request.method == "POST":
                    changes = json.loads(request.body or b"{}")
                    unknown = set(changes) - set(server.config)
                    if unknown:
                        return Response.json(400, {"detail": f"unknown settings {sorted(unknown)}"})
                    server.config.update(changes)
                return Response.json(200, dict(server.config))
        if request.path == "/_standin/requests":
            with server.lock:
                if request.method == "DELETE":
                    server.requests.clear()
                return Response.json(200, {"requests": list(server.requests)})
        return Response.json(404, {"detail": "unknown control endpoint"})

    def _handle(self) -> None:
        request = self._read_request()
        if request.path.startswith("/_standin/"):
            self._send(self._control(request))
            return
        api = _api_for(request.path)
        if api is None:
            self._send(Response.json(404, {"detail": f"no stand-in serves {request.path}"}))
            return
        with self.server.lock:
            self.server.requests.append({"method": request.method, "path": request.path, "query": request.query})
        request.fault = self.server.take_fault(request.path)
        request.config = self.server.config
        request.state = self.server.api_state[api.NAME]
        if self.server.state_dir is not None:
            request.state_dir = self.server.state_dir / api.NAME
        if request.fault and request.fault.startswith("slow_"):
            # A slow upstream (seconds before the answer starts): keeps a task running while a test
            # injects a fault elsewhere. Kept below the clients' read timeouts, it is not an error.
            time.sleep(float(request.fault.removeprefix("slow_")))
            request.fault = None
        if request.fault and request.fault.startswith("http_"):
            self._send(api.error(int(request.fault.removeprefix("http_"))))
            return
        response = api.handle(request)
        if response.stream is not None and request.fault in CUT_FAULTS and response.status == 200:
            self._send_stream(response, cut=request.fault)
            return
        if request.fault == "empty_body" and response.status == 200:
            response.body = b""
        elif request.fault == "truncated" and response.status == 200:
            # A complete HTTP answer whose body stops half-way (a proxy or server cutting output).
            response.body = response.body[: len(response.body) // 2]
        elif request.fault == "streaming_error" and response.status == 200:
            # Open-Meteo's streamed answers: HTTP 200 is sent first; a backend that fails mid-stream
            # leaves what was written, then Vapor's BodyStreamWriter.submit appends this line and ends
            # the stream (open-meteo/open-meteo, Sources/App/Helper/Writer).
            response.body = response.body[: len(response.body) // 2] + \
                b"Unexpected error while streaming data: timeoutReached"
        elif request.fault == "not_json" and response.status == 200:
            # A whole answer that is not the API's: an HTML page served with 200 (a captive portal or a
            # misrouted proxy). Asking again gets the same page.
            response.headers = {"Content-Type": "text/html; charset=utf-8"}
            response.body = b"<!DOCTYPE html><html><head><title>Sign in to the network</title></head></html>"
        elif request.fault == "dropped" and response.status == 200:
            # Promise the full length, send half, then drop the connection - like a cut-off download.
            self.send_response(200)
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body[: len(response.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(response)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


def error_status_text(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local stand-ins for the third-party APIs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="keep what must survive a restart (issued tokens, generated files) here")
    args = parser.parse_args(argv)
    server = StandInServer((args.host, args.port), args.state_dir)
    print(f"API stand-ins ({', '.join(api.NAME for api in APIS)}) on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
