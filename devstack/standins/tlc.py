"""NYC TLC stand-in: the course mirror's monthly yellow-taxi files,
`/DataTalksClub/nyc-tlc-data/releases/download/yellow/yellow_tripdata_YYYY-MM.csv.gz`.

Deterministic synthetic months with the real 18-column header and realistic values; the row count
of a month is the real one (2021-01: 1,369,765 ...) unless the `tlc_rows_per_month` setting caps it
(tests use a few thousand). The body is generated and gzipped while it streams (chunked), so even a
full month never sits in memory. Months after `tlc_last_published` (default 2021-07) answer 404,
as unpublished files do. Broken variants through faults on the path: `truncated_gzip`,
`missing_column`, `non_numeric_fare`.
"""

from __future__ import annotations

import random
import re
import zlib
from datetime import datetime, timedelta

NAME = "nyc-tlc"
PREFIXES = ("/DataTalksClub/nyc-tlc-data/releases/download/yellow/",)
# tlc_files: {"YYYY-MM": "/path/file.csv.gz"} serves a prepared file instead (the benchmark's).
DEFAULT_CONFIG = {"tlc_rows_per_month": None, "tlc_last_published": "2021-07", "tlc_files": {}}
HEADER = ["VendorID", "tpep_pickup_datetime", "tpep_dropoff_datetime", "passenger_count", "trip_distance",
          "RatecodeID", "store_and_fwd_flag", "PULocationID", "DOLocationID", "payment_type", "fare_amount", "extra",
          "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge", "total_amount", "congestion_surcharge"]
REAL_ROWS = {"2021-01": 1_369_765, "2021-02": 1_371_709, "2021-03": 1_925_152, "2021-04": 2_171_187,
             "2021-05": 2_507_109, "2021-06": 2_834_264, "2021-07": 2_821_746}
_FILE_RE = re.compile(r"yellow_tripdata_(\d{4})-(\d{2})\.csv\.gz$")
ROWS_PER_CHUNK = 20_000


def _response():
    from devstack.standins.server import Response  # noqa: PLC0415 - avoid an import cycle

    return Response


def error(status: int):
    body = b"Not Found" if status == 404 else b"Server Error"
    return _response()(status, body, {"Content-Type": "text/plain; charset=utf-8"})


def month_rows(month: str, cap: int | None) -> int:
    rows = REAL_ROWS.get(month, 1_500_000)
    return min(rows, int(cap)) if cap else rows


def csv_lines(month: str, rows: int, fault: str | None = None):
    """Yield the month's CSV as text chunks (header first), deterministic for the month."""
    rng = random.Random(f"yellow-{month}")  # noqa: S311 - synthetic data, not security
    year, mon = map(int, month.split("-"))
    start = datetime(year, mon, 1)
    seconds_in_month = ((datetime(year + mon // 12, mon % 12 + 1, 1)) - start).total_seconds()
    header = [h for h in HEADER if not (fault == "missing_column" and h == "fare_amount")]
    yield ",".join(header) + "\n"
    bad_row = rows // 2
    out = []
    for i in range(rows):
        pickup = start + timedelta(seconds=int(seconds_in_month * i / rows) + rng.randint(0, 59))
        minutes = rng.uniform(2, 45)
        dropoff = pickup + timedelta(minutes=minutes)
        distance = round(max(0.1, rng.gammavariate(1.6, 1.9)), 2)
        fare = round(2.5 + distance * 2.5 + minutes * 0.5, 2)
        tip = round(fare * rng.choice((0, 0, 0.1, 0.15, 0.2, 0.25)), 2)
        tolls = 6.12 if rng.random() < 0.05 else 0.0
        congestion = 2.5 if rng.random() < 0.8 else 0.0
        total = round(fare + 0.5 + 0.5 + tip + tolls + 0.3 + congestion, 2)
        # The vendor-less rows of the real files: ids and counts empty (nullable integers).
        missing_ids = rng.random() < 0.02
        row = [
            "" if missing_ids else str(rng.choice((1, 2))),
            pickup.strftime("%Y-%m-%d %H:%M:%S"),
            dropoff.strftime("%Y-%m-%d %H:%M:%S"),
            "" if missing_ids else str(rng.choice((1, 1, 1, 1, 2, 3, 5))),
            f"{distance}",
            "" if missing_ids else "1",
            "" if missing_ids else rng.choice(("N", "N", "N", "Y")),
            str(rng.randint(1, 265)),
            str(rng.randint(1, 265)),
            "" if missing_ids else str(rng.choice((1, 1, 2, 3))),
            "abc" if (fault == "non_numeric_fare" and i == bad_row) else f"{fare}",
            "0.5", "0.5", f"{tip}", f"{tolls}", "0.3", f"{total}", f"{congestion}",
        ]
        if fault == "missing_column":
            del row[10]
        out.append(",".join(row))
        if len(out) == ROWS_PER_CHUNK:
            yield "\n".join(out) + "\n"
            out = []
    if out:
        yield "\n".join(out) + "\n"


def gzip_stream(month: str, rows: int, fault: str | None = None):
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip container
    produced = 0
    for text in csv_lines(month, rows, fault):
        chunk = compressor.compress(text.encode())
        produced += len(chunk)
        if chunk:
            yield chunk
        if fault == "truncated_gzip" and produced > 4096:
            return  # the file ends mid-stream, no gzip trailer
    yield compressor.flush()


def handle(request):
    match = _FILE_RE.search(request.path)
    if request.method not in ("GET", "HEAD") or not match:
        return error(404)
    month = f"{match.group(1)}-{match.group(2)}"
    if month > str(request.config.get("tlc_last_published", "2021-07")):
        return error(404)
    response = _response()(200, b"", {"Content-Type": "application/octet-stream"})
    prepared = (request.config.get("tlc_files") or {}).get(month)
    if prepared:
        response.stream = _file_stream(prepared)
    else:
        response.stream = gzip_stream(month, month_rows(month, request.config.get("tlc_rows_per_month")), request.fault)
    return response


def _file_stream(path: str):
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk
