"""HTTP plumbing shared by the third-party API clients: base URLs from Airflow connections."""

from __future__ import annotations

from urllib.parse import urlsplit

# Every request has a deadline: a hung API must fail the task, not block a worker slot forever.
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 120


def base_url_from_connection(conn) -> str:
    """Base URL of an HTTP connection, however it was written.

    Accepts the UI/airflow_settings form (host `api.example.com`, schema `https`), the URI form
    (`AIRFLOW_CONN_X='http://127.0.0.1:8765'`: conn_type carries the scheme) and a host that
    already holds a scheme. Without any scheme, https.
    """
    host = (conn.host or "").strip().rstrip("/")
    if not host:
        raise ValueError(f"connection {conn.conn_id!r} has no host: set it to the API's base URL")
    if "://" in host:
        url = host
    else:
        if conn.schema in ("http", "https"):
            scheme = conn.schema
        elif conn.conn_type in ("http", "https"):
            scheme = conn.conn_type
        else:
            scheme = "https"
        url = f"{scheme}://{host}"
    if conn.port and urlsplit(url).port is None:
        url = f"{url}:{conn.port}"
    return url


def base_url(conn_id: str) -> str:
    """Base URL of the Airflow connection `conn_id` (so pointing the connection elsewhere
    redirects all of that API's traffic)."""
    from airflow.sdk import BaseHook  # noqa: PLC0415 - resolved at run time, not at parse time

    return base_url_from_connection(BaseHook.get_connection(conn_id))


# Open-Meteo's API server (Vapor) streams large answers; when a backend fails mid-stream it has
# already sent HTTP 200, so it appends this text to what it sent and ends the stream
# (open-meteo/open-meteo, Sources/App/Helper/Writer: BodyStreamWriter.submit writes
# "Unexpected error while streaming data: \(error)"). The same request usually succeeds later.
STREAMING_ERROR_MARKER = "Unexpected error while streaming data:"
# The last value of a cut body: a string with no closing quote, a number or literal cut half-way.
_JSON_TAIL_CUT_MID_VALUE = (
    r'(?:"(?:[^"\\]|\\.)*\\?|[-+.0-9eE]+|t(?:r(?:ue?)?)?|f(?:a(?:l(?:se?)?)?)?|n(?:u(?:ll?)?)?)\s*')


def parse_json_body(body: bytes | str):
    """(payload, problem): the JSON document in `body`, or None and why not.

    `problem` tells the two failures apart that callers must treat differently:
    - ("cut", detail): the server had a problem - the body is the beginning of a document that stops
      early (a proxy or server cut its output), is empty, or ends in Open-Meteo's mid-stream error.
      Asking again later usually works: retry with backoff, like a 5xx.
    - ("malformed", detail): the answer is wrong - text that is not JSON from the start or breaks
      off inside the document. Asking again gets the same: fail at once.
    """
    import json  # noqa: PLC0415
    import re  # noqa: PLC0415

    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    if STREAMING_ERROR_MARKER in text:
        reason = text[text.index(STREAMING_ERROR_MARKER) + len(STREAMING_ERROR_MARKER):].strip()[:200]
        return None, ("cut", f"the server failed mid-answer: '{STREAMING_ERROR_MARKER} {reason}'")
    if not text.strip():
        return None, ("cut", "an empty body (0 bytes of JSON)")
    try:
        return json.loads(text), None
    except ValueError as exc:
        pos = getattr(exc, "pos", None)
        # Cut short: the parser ran out of text, or stopped at a last token that was cut itself (a
        # string with no closing quote, `40.`, `tru`).
        if pos is not None and (pos >= len(text.rstrip()) or re.fullmatch(_JSON_TAIL_CUT_MID_VALUE, text[pos:])):
            return None, ("cut", f"a JSON document cut short after {len(text)} characters "
                                 f"(ends with {text[-40:]!r})")
        return None, ("malformed", f"not JSON ({exc}; {len(text)} characters, starting {text[:60]!r})")
