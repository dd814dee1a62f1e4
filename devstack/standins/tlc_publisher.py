"""NYC TLC publisher stand-in: the TLC's own monthly yellow-taxi parquet files, as CloudFront serves them,
`/trip-data/yellow_tripdata_YYYY-MM.parquet` (real: https://d37ci6vzurychx.cloudfront.net/trip-data/...).

The same synthetic city as the course mirror's CSV stand-in (tlc.py): a month's trips are drawn from
tlc.py's row model with the same seed and the same draws, so for a month both serve (2019-01 to 2021-07)
and the same `tlc_rows_per_month`, every CSV trip is in the parquet file with the same times, zones and
amounts, and the same number on each day of the demand model (tlc.day_counts) - the TLC re-released its
whole history as parquet in May 2022 (toddwschneider/nyc-taxi-data
README and PR #54; 2021-01 has 1,369,765 trips in the course's CSV, 1,369,769 in the parquet file:
lykmapipo/NYC-TLC-Trip-Data, data/trips-metadata/yellow_tripmetadata_2021.csv). On top of them each file
has what the publisher's files have:

Schema eras (pyarrow types; every field nullable; timestamps naive microseconds in every era):
- 2019-01 .. 2023-01: VendorID int64, tpep_pickup/dropoff_datetime timestamp[us], passenger_count double,
  trip_distance double, RatecodeID double, store_and_fwd_flag string, PULocationID/DOLocationID int64,
  payment_type int64, fare_amount, extra, mta_tax, tip_amount, tolls_amount, improvement_surcharge,
  total_amount, congestion_surcharge double, airport_fee double (lower case) - except 2019-01 .. 2020-07
  and 2020-10, where airport_fee is all-null with the arrow type `null`. Sources: pyarrow's printout of
  yellow_tripdata_2022-01 (public code, "Sample program to read Parquet and Load to MySQL"); a public
  data-lake manifest (code-search text, its repository not named) diffing the parquet footers of every
  month 2019-01 .. 2026-08 ("TLC schema-change timeline": airport_fee null->double 2020-08, double->null
  2020-10, null->double 2020-11); the null-typed columns toddwschneider/nyc-taxi-data must retype before
  loading (clickhouse/README.md,
  clickhouse/setup_files/fix_yellow_parquet_schemas.R); "airport_fee (100% missing)" in 2019-01 (public
  notebooks).
- 2023-02 .. 2024-12: VendorID int32, passenger_count int64, RatecodeID int64, store_and_fwd_flag
  large_string, PULocationID/DOLocationID int32, `Airport_fee` (capital A) double (same manifest:
  "yellow 2023-02 added Airport_fee removed airport_fee, VendorID int64->int32 ..."; the column names of
  every month in lykmapipo/NYC-TLC-Trip-Data's metadata: airport_fee until 2023-01, Airport_fee from
  2023-02; nyc-taxi-data's fix_yellow_parquet_schemas.R renames it back).
- 2025-01 ..: as 2023-02, plus cbd_congestion_fee double (pyarrow printouts of yellow_tripdata_2025-01 and
  2025-09 in public code; toddwschneider/nyc-taxi-data issue #57).
- 2026-06 ..: plus request_source (the manifest: "yellow 2026-06 added request_source"). Its type and
  values are not established: the stand-in writes it as large_string (the type of every text column since
  2023-02), all null.
Months before 2019-01 (other eras: 2009-2010 have other column names) are not served (403).

Values (rates from the TLC data dictionary as of 2025-03-18 and its earlier versions):
- "Unknown" rows: payment_type 0 (2025 dictionary: "0 = Flex Fare") with passenger_count, RatecodeID,
  store_and_fwd_flag, congestion_surcharge and airport fee null, VendorID set. A public profile of 100,000
  rows of a file from the turn of 2023 (lower-case airport_fee, improvement_surcharge up to 1.00) has
  exactly 11,412 such rows in all five columns and payment_type 0 on the same 11,412; 2025-09 has
  1,067,195 null passenger counts in 4,251,015 rows, 2026-01 29%. Here: tlc.py's 2% vendor-less rows,
  plus 8% from 2023, 23% from 2025 (about 25% then).
- New codes: VendorID 6 (Myle) and 7 (Helix) and RatecodeID 99 (unknown) from 2023 (the same profile
  counts VendorID 7: 262, 6: 11, RatecodeID 99: 911 per 100,000), more of them from 2025.
- improvement_surcharge 0.30 until 2022, 1.00 from 2023 (the profile's maximum; the fare rise of December
  2022, here from 2023-01); airport fee on pickups at JFK (zone 132) and LaGuardia (138): 1.25 in 2022,
  1.75 from 2023 (the profile: min -1.75), 0 elsewhere. When the fee started is not established
  (2022-01 rows printed in public code show the column, 0.0 off the airports): the stand-in charges it
  from 2022, so that the months it shares with the course's CSV keep the CSV's totals (2020-08 ..
  2021-12: 0.0 where the column is double).
- cbd_congestion_fee (2025 on): 0.75 per trip picked up or dropped off in the Congestion Relief Zone
  (Manhattan south of 60th Street: CRZ_ZONES) from 2025-01-05 (the dictionary: "starting Jan. 5, 2025";
  MTA's schedule as quoted by the press: "Green and yellow taxis and black cars: $0.75 per trip"), at
  any hour, 0 otherwise. total_amount includes every fee.
- Pickups outside the month: max(3, rows / 50,000) more trips per file, a third in the last hour of the
  month before, a third in the first two days of the month after, a third on 2008-12-31 (the real
  2021-01 has pickups dated 2008-12-31 and 2021-02-22, tlc.py's docstring).

Publication (clock: the `tlc_now` setting, ISO timestamp, default the real time): month M appears on a
day of month M+2 between the 17th and the 26th (per month, from a hash; `tlc_publication_day` fixes it),
between 13:00 and 22:59 UTC - the Last-Modified of the files 2022-10 .. 2024-05 (lykmapipo/NYC-TLC-Trip-
Data metadata: 2023-03 on 2023-05-19, 2023-04 on 06-23, 2023-06 on 08-22, 2024-01 on 2024-03-21, 2024-02
on 04-19, 2024-03 on 05-22, 2024-05 on 07-18; a few later ones were republished). Before that, and for
any other key, the answer is CloudFront's forward of S3's 403 AccessDenied XML: the nyc-tlc bucket cannot
be listed (awslabs/open-data-registry issue #1418: ListObjectsV2 AccessDenied), and S3 answers 403, not
404, for a missing key to a caller without s3:ListBucket (S3 GetObject/HeadObject documentation); the
manifest above saw "fhv_tripdata_2026-08.parquet was not yet published (HTTP 403)".

Republishing: `tlc_republished` {"YYYY-MM": n} republishes a month n times, 30 days apart after its
publication ({"YYYY-MM": ["ISO time", ...]} or "ISO time": at those times); each revision the clock has
passed adds late-arriving trips (max(1, rows / 1,000)), so the content, ETag and Last-Modified change
(real: 2022-12 and 2023-01 both carry Last-Modified 2023-03-20, 2023-08 2023-11-02). Not modelled: the
re-release of every older file on 2022-06-30 (their Last-Modified since) - here a month keeps its
nominal publication time.

HTTP: GET and HEAD answer the same headers (Content-Length, ETag, Last-Modified, Content-Type,
Accept-Ranges); the ETag is S3's, from the content: the MD5 in hex, or for a file above 8 MiB the MD5 of
its 8 MiB parts' MD5s and "-<parts>", as a multipart upload (the AWS CLI's default part size) makes it.
Single byte ranges (`Range: bytes=a-b`, `bytes=-n`: what pyarrow/fsspec, DuckDB and footer-only readers
send, e.g. `Range: bytes=-65536` in public code reading these files' schemas) answer 206; If-None-Match
and If-Modified-Since answer 304.

Faults on the path (beside the server's truncated / dropped / empty_body / http_<status> / slow_<s>):
`parquet_unknown_column` (an extra ehail_fee double column, all null - green taxis' column),
`parquet_missing_column` (no fare_amount), `parquet_wrong_type` (tpep_pickup_datetime as text
"YYYY-MM-DD HH:MM:SS"), `parquet_fractional_passenger_count` (passenger_count double, one row in 200
with half a passenger more: 1.5, 2.5 ...).

Generation: vectorised (numpy, pyarrow) in tlc.ROWS_PER_CHUNK pieces, written in row groups of
ROW_GROUP_ROWS: memory stays bounded whatever the row count. A file is written once - into the state
folder (`<state>/tlc-publisher/yellow_tripdata_YYYY-MM.<rows>.r<revision>.<version>.parquet`, temp file
and rename; without one a temp folder of the process) - before the first answer, since the headers
(length, ETag) need the whole file; concurrent first requests wait for one generation. Faulted files are
generated per request and never cached. pyarrow and numpy are imported on first use: the stand-in server
itself needs only the standard library, and without them this path answers 500.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import os
import random
import re
import secrets
import shutil
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

from devstack.standins import tlc
from devstack.standins.messages import Response

NAME = "tlc-publisher"
PREFIXES = ("/trip-data/",)
# tlc_rows_per_month is tlc.py's setting: both sources cap their months with it.
DEFAULT_CONFIG = {"tlc_now": None, "tlc_publication_day": None, "tlc_republished": {}}
FIRST_MONTH = "2019-01"
# Part of every cache file's name (with tlc.py's version and pyarrow's): bump it with any change to the bytes.
GENERATOR_VERSION = "p1"
ROW_GROUP_ROWS = 100_000
SERVE_CHUNK = 1 << 20
MULTIPART_BYTES = 8 << 20  # the AWS CLI's default multipart threshold and part size
FILE_FAULTS = ("parquet_unknown_column", "parquet_missing_column", "parquet_wrong_type",
               "parquet_fractional_passenger_count")
_FILE_RE = re.compile(r"^/trip-data/yellow_tripdata_(\d{4})-(\d{2})\.parquet$")
# Rows of the real files, 2019-01 .. 2026-10 (every month the stand-in can publish up to the tests' clocks):
# - 2019-01 .. 2024-05: lykmapipo/NYC-TLC-Trip-Data, data/trips-metadata/yellow_tripmetadata_*.csv (file_num_rows);
# - 2024-06, 2024-10 .. 2025-11: a public project's table of rows loaded per file (code-search text, its repository
#   not named; its 2024-05 line repeats 2025-05's count, so 2024-05 stays lykmapipo's); 2024-06 also equals the
#   DataTalksClub zoomcamp 2025 homework 3 answer (2024-01..06: 20,332,093) minus lykmapipo's 2024-01..05;
#   2025-09 and 2026-01 also from public code printing them;
# - 2025-12: the 2025 total read from the files' parquet metadata in public code (48,722,602) minus 2025-01..11.
# ESTIMATED (not found as single counts; in ESTIMATED_ROWS): 2024-07..09 share the 2024 total (41,169,720, same
# sources) minus its known months in proportion to 2025-07..09; 2026-02..08 share the 2026-01..08 total
# (29,703,355) minus 2026-01 in proportion to 2025-02..08; 2026-09/10 are 2025-09/10 x (2026-01..08 total /
# 2025-01..08 total = 0.9413). Other months: DEFAULT_ROWS. tlc_scale scales, tlc_rows_per_month caps them.
REAL_ROWS = {
    "2019-01": 7_696_617, "2019-02": 7_049_370, "2019-03": 7_866_620, "2019-04": 7_475_949, "2019-05": 7_598_445,
    "2019-06": 6_971_560, "2019-07": 6_310_419, "2019-08": 6_073_357, "2019-09": 6_567_788, "2019-10": 7_213_891,
    "2019-11": 6_878_111, "2019-12": 6_896_317, "2020-01": 6_405_008, "2020-02": 6_299_367, "2020-03": 3_007_687,
    "2020-04": 238_073, "2020-05": 348_415, "2020-06": 549_797, "2020-07": 800_412, "2020-08": 1_007_286,
    "2020-09": 1_341_017, "2020-10": 1_681_132, "2020-11": 1_509_000, "2020-12": 1_461_898,
    "2021-01": 1_369_769, "2021-02": 1_371_709, "2021-03": 1_925_152, "2021-04": 2_171_187, "2021-05": 2_507_109,
    "2021-06": 2_834_264, "2021-07": 2_821_746, "2021-08": 2_788_757, "2021-09": 2_963_793, "2021-10": 3_463_504,
    "2021-11": 3_472_949, "2021-12": 3_214_369, "2022-01": 2_463_931, "2022-02": 2_979_431, "2022-03": 3_627_882,
    "2022-04": 3_599_920, "2022-05": 3_588_295, "2022-06": 3_558_124, "2022-07": 3_174_394, "2022-08": 3_152_677,
    "2022-09": 3_183_767, "2022-10": 3_675_411, "2022-11": 3_252_717, "2022-12": 3_399_549, "2023-01": 3_066_766,
    "2023-02": 2_913_955, "2023-03": 3_403_766, "2023-04": 3_288_250, "2023-05": 3_513_649, "2023-06": 3_307_234,
    "2023-07": 2_907_108, "2023-08": 2_824_209, "2023-09": 2_846_722, "2023-10": 3_522_285, "2023-11": 3_339_715,
    "2023-12": 3_376_567, "2024-01": 2_964_624, "2024-02": 3_007_526, "2024-03": 3_582_628, "2024-04": 3_514_289,
    "2024-05": 3_723_833, "2024-06": 3_539_193, "2024-07": 3_222_218, "2024-08": 2_953_734, "2024-09": 3_513_164,
    "2024-10": 3_833_771, "2024-11": 3_646_369, "2024-12": 3_668_371, "2025-01": 3_475_226, "2025-02": 3_577_543,
    "2025-03": 4_145_257, "2025-04": 3_970_553, "2025-05": 4_591_845, "2025-06": 4_322_960, "2025-07": 3_898_963,
    "2025-08": 3_574_091, "2025-09": 4_251_015, "2025-10": 4_428_699, "2025-11": 4_181_444, "2025-12": 4_305_006,
    "2026-01": 3_724_889, "2026-02": 3_309_653, "2026-03": 3_834_856, "2026-04": 3_673_234, "2026-05": 4_248_004,
    "2026-06": 3_999_253, "2026-07": 3_607_005, "2026-08": 3_306_461, "2026-09": 4_001_383, "2026-10": 4_168_633,
}
ESTIMATED_ROWS = frozenset({"2024-07", "2024-08", "2024-09", *(f"2026-{m:02d}" for m in range(2, 11))})
DEFAULT_ROWS = 3_500_000
# Taxi zones of the Congestion Relief Zone, Manhattan south of 60th Street: the 38 zones toddwschneider/nyc-taxi-data
# files as `manhattan_below_60` (clickhouse/setup_files/taxi_zone_location_ids.csv), Alphabet City .. World Trade
# Center; Lincoln Square (142, 143) is `manhattan_60_96` there.
CRZ_ZONES = (4, 12, 13, 45, 48, 50, 68, 79, 87, 88, 90, 100, 107, 113, 114, 125, 137, 144, 148, 158, 161, 162,
             163, 164, 170, 186, 209, 211, 224, 229, 230, 231, 232, 233, 234, 246, 249, 261)
AIRPORT_PICKUP_ZONES = (132, 138)  # JFK, LaGuardia
CBD_FEE, CBD_START = 0.75, datetime(2025, 1, 5)
REVISION_SPACING = timedelta(days=30)
_NULL_AIRPORT_FEE = {f"2019-{m:02d}" for m in range(1, 13)} | {f"2020-{m:02d}" for m in range(1, 8)} | {"2020-10"}


# --- errors: CloudFront forwarding S3 ------------------------------------------------------------------

_S3_ERRORS = {403: ("AccessDenied", "Access Denied"), 404: ("NoSuchKey", "The specified key does not exist."),
              416: ("InvalidRange", "The requested range is not satisfiable"),
              500: ("InternalError", "We encountered an internal error. Please try again."),
              503: ("SlowDown", "Please reduce your request rate.")}


def error(status: int) -> Response:
    """S3's XML error as CloudFront forwards it; CloudFront's own HTML page for a status S3 does not send
    (502 and 504: the origin unreachable)."""
    if status not in _S3_ERRORS:
        body = ("<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01 Transitional//EN\">\n<HTML><HEAD><TITLE>ERROR: The "
                "request could not be satisfied</TITLE></HEAD><BODY><H1>" f"{status} ERROR</H1>"
                "<H2>The request could not be satisfied.</H2></BODY></HTML>")
        return Response(status, body.encode(), {"Content-Type": "text/html", "X-Cache": "Error from cloudfront"})
    code, message = _S3_ERRORS[status]
    request_id = secrets.token_hex(8).upper()
    host_id = base64.b64encode(secrets.token_bytes(56)).decode()
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>{request_id}</RequestId><HostId>{host_id}</HostId></Error>")
    return Response(status, body.encode(), {"Content-Type": "application/xml", "X-Cache": "Error from cloudfront"})


# --- the calendar --------------------------------------------------------------------------------------

def _next_month(month: str, step: int = 1) -> str:
    year, mon = map(int, month.split("-"))
    index = year * 12 + mon - 1 + step
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def publication_time(month: str, day: int | None = None) -> datetime:
    """When month `month` (YYYY-MM) appears: a day of the second month after it, 17th-26th, 13:00-22:59 UTC."""
    digest = hashlib.sha256(f"yellow-publication-{month}".encode()).digest()
    year, mon = map(int, _next_month(month, 2).split("-"))
    return datetime(year, mon, int(day) if day else 17 + digest[0] % 10, 13 + digest[1] % 10, digest[2] % 60,
                    digest[3] % 60, tzinfo=UTC)


def revision_times(month: str, published: datetime, republished) -> list[datetime]:
    """When the month was republished (the `tlc_republished` entry: a count or a list of ISO times)."""
    if isinstance(republished, int):
        return [published + REVISION_SPACING * k for k in range(1, republished + 1)]
    if isinstance(republished, str):
        republished = [republished]
    return sorted(_parse_time(text) for text in republished or ())


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(str(text))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def clock(config: dict) -> datetime:
    return _parse_time(config["tlc_now"]) if config.get("tlc_now") else datetime.now(UTC)


def month_rows(month: str, cap: int | None, scale: float | None = None) -> int:
    """Full size: the month's real count; scaled: the synthetic demand model's (tlc.month_rows)."""
    return tlc.month_rows(month, cap, scale, real=REAL_ROWS.get(month, DEFAULT_ROWS))


def outside_rows(rows: int) -> int:
    return max(3, rows // 50_000)


def late_rows(rows: int) -> int:
    return max(1, rows // 1000)


# --- eras ------------------------------------------------------------------------------------------------

def schema_for(month: str, fault: str | None = None):
    """The pyarrow schema of a month's file (with a fault's change)."""
    pa = _pa()
    legacy = month < "2023-02"
    ints = pa.int64() if legacy else pa.int32()
    counts = pa.float64() if legacy else pa.int64()
    airport = pa.null() if month in _NULL_AIRPORT_FEE else pa.float64()
    fields = [("VendorID", ints), ("tpep_pickup_datetime", pa.timestamp("us")),
              ("tpep_dropoff_datetime", pa.timestamp("us")), ("passenger_count", counts),
              ("trip_distance", pa.float64()), ("RatecodeID", counts),
              ("store_and_fwd_flag", pa.string() if legacy else pa.large_string()), ("PULocationID", ints),
              ("DOLocationID", ints), ("payment_type", pa.int64())]
    fields += [(name, pa.float64()) for name in ("fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount",
                                                 "improvement_surcharge", "total_amount", "congestion_surcharge")]
    fields.append(("airport_fee" if legacy else "Airport_fee", airport))
    if month >= "2025-01":
        fields.append(("cbd_congestion_fee", pa.float64()))
    if month >= "2026-06":
        fields.append(("request_source", pa.large_string()))
    if fault == "parquet_unknown_column":
        fields.append(("ehail_fee", pa.float64()))
    elif fault == "parquet_missing_column":
        fields = [field for field in fields if field[0] != "fare_amount"]
    elif fault == "parquet_wrong_type":
        fields[1] = ("tpep_pickup_datetime", pa.large_string())
    elif fault == "parquet_fractional_passenger_count":
        fields[3] = ("passenger_count", pa.float64())
    return pa.schema(fields)


# --- generation ------------------------------------------------------------------------------------------

def _pa():
    import pyarrow  # noqa: PLC0415 - optional: the stand-in server runs without it (a plain Python image)

    return pyarrow


class _Month:
    """One month's row model: tlc.py's trip shapes and zone pairs as arrays, and the era's rules."""

    def __init__(self, month: str, rows: int, fault: str | None):
        import numpy as np  # noqa: PLC0415 - optional, as pyarrow

        self.np, self.pa = np, _pa()
        self.month, self.rows, self.fault = month, rows, fault
        self.schema = schema_for(month, fault)
        year, mon = map(int, month.split("-"))
        self.start = datetime(year, mon, 1)
        end = datetime(year + mon // 12, mon % 12 + 1, 1)
        self.month_seconds = int((end - self.start).total_seconds())
        self.start_us = int(self.start.replace(tzinfo=UTC).timestamp()) * 1_000_000
        # The same generator, in the same order, as tlc.csv_lines: shapes, places, then a draw per chunk.
        self.rng = random.Random(f"yellow-{month}")  # noqa: S311 - synthetic data, not security
        shapes = tlc._shapes(self.rng)  # noqa: SLF001 - one row model for both TLC sources
        places = [(self.rng.randint(1, 265), self.rng.randint(1, 265)) for _ in range(tlc.PLACES)]
        self.extra_rng = random.Random(f"yellow-parquet-{month}")  # noqa: S311 - what only the parquet files have
        self._shape_arrays(shapes)
        self.pu = np.array([pu for pu, _ in places], dtype=np.int64)
        self.do = np.array([do for _, do in places], dtype=np.int64)
        self.crz = np.zeros(266, dtype=bool)
        self.crz[list(CRZ_ZONES)] = True
        self.airport = np.zeros(266, dtype=bool)
        self.airport[list(AIRPORT_PICKUP_ZONES)] = True
        recent, latest = month >= "2023-01", month >= "2025-01"
        # Shares out of 65,536: more unknown rows and new codes in later years.
        self.unknown_extra = 15_073 if latest else 5_243 if recent else 0  # +23%, +8%
        self.vendor6 = 197 if latest else 33 if recent else 0  # 0.3%, 0.05%
        self.vendor7 = 983 if latest else 197 if recent else 0  # 1.5%, 0.3%
        self.ratecode99 = 1311 if latest else 655 if recent else 0  # 2%, 1% (15-bit draws: out of 32,768)
        self.improvement = 1.0 if recent else 0.3
        self.airport_fee = None if month in _NULL_AIRPORT_FEE else 1.75 if recent else 1.25 if month >= "2022-01" \
            else 0.0
        self.cbd_from_s = int((CBD_START - self.start).total_seconds()) if month >= "2025-01" else None

    def _shape_arrays(self, shapes) -> None:
        np = self.np
        columns = {name: [] for name in ("vendor", "seconds", "passengers", "distance", "ratecode", "flag",
                                         "payment", "fare", "tip", "tolls", "total", "congestion")}
        for vendor, seconds, middle, payment, fare, rest in shapes:
            passengers, distance, ratecode, flag = middle.split(",")[1:5]
            _, _, _, tip, tolls, _, total, congestion = rest.split(",")
            for name, value in (("vendor", int(vendor or 0)), ("seconds", seconds),
                                ("passengers", int(passengers or 0)), ("distance", float(distance)),
                                ("ratecode", int(ratecode or 0)),
                                ("flag", {"N": 0, "Y": 1}.get(flag, 0)), ("payment", int(payment or 0)),
                                ("fare", float(fare)), ("tip", float(tip)), ("tolls", float(tolls)),
                                ("total", float(total)), ("congestion", float(congestion))):
                columns[name].append(value)
        self.shape = {name: np.array(values, dtype=np.float64 if name in ("distance", "fare", "tip", "tolls", "total",
                                                                          "congestion") else np.int64)
                      for name, values in columns.items()}
        self.shape_missing = self.shape["vendor"] == 0  # tlc.py's vendor-less rows

    def batches(self, revision: int = 0):
        """The file's record batches: the base trips chunk by chunk (each followed by its share of pickups
        outside the month), then the late trips of each revision."""
        np = self.np
        rows, span = self.rows, self.month_seconds - 60
        chunks = list(range(0, rows, tlc.ROWS_PER_CHUNK))
        outside = outside_rows(rows)
        owner = [j * len(chunks) // outside for j in range(outside)]  # the chunk after which outside trip j comes
        outside_draw = self._draw(random.Random(f"yellow-parquet-{self.month}-outside"), outside)  # noqa: S311
        for c, lo in enumerate(chunks):
            hi = min(rows, lo + tlc.ROWS_PER_CHUNK)
            n = hi - lo
            draw = self.rng.getrandbits(40 * n).to_bytes(5 * n, "little")
            words = np.frombuffer(draw, dtype="<u4", count=n).astype(np.int64)
            jitter = np.frombuffer(draw, dtype=np.uint8, offset=4 * n).astype(np.int64) % 60
            index = np.arange(lo, hi, dtype=np.int64)
            yield self._batch(self._pickup_offsets(index) + jitter, words & (tlc.SHAPES - 1), words >> 16,
                              self._draw(self.extra_rng, n), index)
            mine = [j for j in range(outside) if owner[j] == c]
            if mine:
                yield self._outside_batch(mine, outside_draw)
        for k in range(1, revision + 1):
            late = late_rows(rows)
            rng = random.Random(f"yellow-parquet-{self.month}-r{k}")  # noqa: S311
            pickups = np.array([rng.randrange(span) for _ in range(late)], dtype=np.int64)
            shapes = np.array([rng.randrange(tlc.SHAPES) for _ in range(late)], dtype=np.int64)
            places = np.array([rng.randrange(tlc.PLACES) for _ in range(late)], dtype=np.int64)
            index = np.arange(late, dtype=np.int64) + rows + outside + (k - 1) * late
            yield self._batch(pickups, shapes, places, self._draw(rng, late), index)

    def _pickup_offsets(self, index):
        """tlc.pickup_offsets for an array of row numbers: the same seconds, the same demand model per day."""
        np = self.np
        if not hasattr(self, "_starts"):
            self._starts = np.array(tlc.day_starts(self.month, self.rows), dtype=np.int64)
        starts = self._starts
        day = np.searchsorted(starts, index, side="right") - 1
        first, count = starts[day], starts[day + 1] - starts[day]
        return day * tlc.DAY_SECONDS + (tlc.DAY_SECONDS - 60) * (index - first) // count

    def _draw(self, rng: random.Random, n: int):
        """Three 16-bit words a row: unknown row?, new vendor code?, and (ratecode 99? << 1 | the vendor of a
        vendor-less row)."""
        return self.np.frombuffer(rng.getrandbits(48 * n).to_bytes(6 * n, "little"), dtype="<u2").reshape(n, 3) \
            if n else self.np.zeros((0, 3), dtype="<u2")

    def _outside_batch(self, mine: list[int], draw):
        np = self.np
        rng = random.Random(f"yellow-parquet-{self.month}-outside-rows-{mine[0]}")  # noqa: S311
        stale = int((datetime(2008, 12, 31, 23) - self.start).total_seconds())
        pickups = []
        for j in mine:
            kind, offset = j % 3, rng.randrange(3600)
            if kind == 0:  # the last hour of the month before
                pickups.append(-1 - offset)
            elif kind == 1:  # the first two days of the month after
                pickups.append(self.month_seconds + rng.randrange(2 * 86400))
            else:  # a meter with a wrong clock
                pickups.append(stale + offset)
        shapes = np.array([rng.randrange(tlc.SHAPES) for _ in mine], dtype=np.int64)
        places = np.array([rng.randrange(tlc.PLACES) for _ in mine], dtype=np.int64)
        index = np.array(mine, dtype=np.int64) + self.rows
        return self._batch(np.array(pickups, dtype=np.int64), shapes, places, draw[mine], index)

    def _batch(self, pickup_s, s, p, draw, index):
        """A record batch of trips: pickup seconds from the month's start, shape and place indexes, the
        parquet-only draws and the rows' numbers in the file."""
        np, pa, sh = self.np, self.pa, self.shape
        n = len(s)
        u_unknown, u_vendor, u_code = (draw[:, i].astype(np.int64) for i in range(3))
        missing = self.shape_missing[s]
        unknown = missing | (u_unknown < self.unknown_extra)
        known = ~unknown
        vendor = np.where(missing, 1 + (u_code & 1), sh["vendor"][s])
        vendor = np.where(u_vendor < self.vendor6, 6, np.where(u_vendor < self.vendor6 + self.vendor7, 7, vendor))
        pickup_us = self.start_us + pickup_s * 1_000_000
        dropoff_us = pickup_us + sh["seconds"][s] * 1_000_000
        pu, do = self.pu[p], self.do[p]
        ratecode = np.where((u_code >> 1) < self.ratecode99, 99, np.maximum(sh["ratecode"][s], 1))
        payment = np.where(unknown, 0, sh["payment"][s])
        passengers = np.maximum(sh["passengers"][s], 1)
        delta = np.full(n, self.improvement - 0.3)
        if self.airport_fee is not None:
            airport = np.where(self.airport[pu], self.airport_fee, 0.0)
            delta += np.where(known, airport, 0.0)
        if self.cbd_from_s is not None:
            cbd = np.where((pickup_s >= self.cbd_from_s) & (self.crz[pu] | self.crz[do]), CBD_FEE, 0.0)
            delta += cbd
        total = sh["total"][s]
        total = np.where(delta != 0, np.round(total + delta, 2), total)

        types = {field.name: field.type for field in self.schema}
        counts_type = types["RatecodeID"]
        columns = {
            "VendorID": pa.array(vendor, types["VendorID"]),
            "tpep_pickup_datetime": pa.array(pickup_us, pa.timestamp("us")),
            "tpep_dropoff_datetime": pa.array(dropoff_us, pa.timestamp("us")),
            "passenger_count": pa.array(passengers.astype(np.float64) if pa.types.is_floating(counts_type)
                                        else passengers, counts_type, mask=unknown),
            "trip_distance": pa.array(sh["distance"][s], pa.float64()),
            "RatecodeID": pa.array(ratecode.astype(np.float64) if pa.types.is_floating(counts_type) else ratecode,
                                   counts_type, mask=unknown),
            "store_and_fwd_flag": pa.array(["N", "Y"], types["store_and_fwd_flag"]).take(
                pa.array(sh["flag"][s], mask=unknown)),
            "PULocationID": pa.array(pu, types["PULocationID"]),
            "DOLocationID": pa.array(do, types["DOLocationID"]),
            "payment_type": pa.array(payment, pa.int64()),
            "fare_amount": pa.array(sh["fare"][s], pa.float64()),
            "extra": pa.array(np.full(n, 0.5), pa.float64()),
            "mta_tax": pa.array(np.full(n, 0.5), pa.float64()),
            "tip_amount": pa.array(sh["tip"][s], pa.float64()),
            "tolls_amount": pa.array(sh["tolls"][s], pa.float64()),
            "improvement_surcharge": pa.array(np.full(n, self.improvement), pa.float64()),
            "total_amount": pa.array(total, pa.float64()),
            "congestion_surcharge": pa.array(sh["congestion"][s], pa.float64(), mask=unknown),
        }
        airport_name = "airport_fee" if "airport_fee" in types else "Airport_fee"
        columns[airport_name] = pa.nulls(n) if self.airport_fee is None else \
            pa.array(airport, pa.float64(), mask=unknown)
        if "cbd_congestion_fee" in types:
            columns["cbd_congestion_fee"] = pa.array(cbd, pa.float64())
        if "request_source" in types:
            columns["request_source"] = pa.nulls(n, pa.large_string())
        if self.fault == "parquet_unknown_column":
            columns["ehail_fee"] = pa.nulls(n, pa.float64())
        elif self.fault == "parquet_wrong_type":
            seconds = columns["tpep_pickup_datetime"].cast(pa.timestamp("s"))
            text = _pc().strftime(seconds, format="%Y-%m-%d %H:%M:%S")
            columns["tpep_pickup_datetime"] = text.cast(pa.large_string())
        elif self.fault == "parquet_fractional_passenger_count":
            half = np.where(index % 200 == 7, 0.5, 0.0)
            columns["passenger_count"] = pa.array(passengers + half, pa.float64(), mask=unknown)
        return pa.RecordBatch.from_arrays([columns[field.name] for field in self.schema], schema=self.schema)


def _pc():
    import pyarrow.compute as pc  # noqa: PLC0415 - optional, as pyarrow

    return pc


def write_month(sink, month: str, rows: int, revision: int = 0, fault: str | None = None,
                row_group_rows: int = ROW_GROUP_ROWS) -> None:
    """Write the month's parquet file to `sink` (a path or a writable binary file), in row groups of
    row_group_rows; the same bytes for the same arguments (and pyarrow version) in any process."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - optional, as pyarrow

    pa = _pa()
    model = _Month(month, rows, fault)
    pending, size = [], 0
    with pq.ParquetWriter(sink, model.schema, compression="snappy") as writer:
        for batch in model.batches(revision):
            pending.append(batch)
            size += batch.num_rows
            if size >= row_group_rows:
                table = pa.Table.from_batches(pending, model.schema)
                full = size // row_group_rows * row_group_rows
                writer.write_table(table.slice(0, full), row_group_size=row_group_rows)
                pending, size = ([b for b in table.slice(full).to_batches() if b.num_rows], size - full)
        if size:
            writer.write_table(pa.Table.from_batches(pending, model.schema), row_group_size=row_group_rows)


def s3_etag(path: Path) -> str:
    """S3's ETag of the file as the AWS CLI uploads it (quoted): single-part MD5, or multipart above 8 MiB."""
    digests = []
    with open(path, "rb") as handle:
        while part := handle.read(MULTIPART_BYTES):
            digests.append(hashlib.md5(part, usedforsecurity=False).digest())
    if len(digests) <= 1 and os.path.getsize(path) <= MULTIPART_BYTES:
        return f'"{(digests[0] if digests else hashlib.md5(b"", usedforsecurity=False).digest()).hex()}"'
    return f'"{hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"'


# --- serving ---------------------------------------------------------------------------------------------

def handle(request):
    if request.method not in ("GET", "HEAD"):
        return error(403)
    match = _FILE_RE.match(request.path)
    if not match or not 1 <= int(match.group(2)) <= 12:
        return error(403)  # no such key, and the bucket cannot be listed: AccessDenied
    month = f"{match.group(1)}-{match.group(2)}"
    if not FIRST_MONTH <= month <= "9000-01":
        return error(403)
    config = request.config
    try:
        now = clock(config)
        published = publication_time(month, config.get("tlc_publication_day"))
        revisions = [t for t in revision_times(month, published, (config.get("tlc_republished") or {}).get(month))
                     if t <= now]
    except (TypeError, ValueError) as exc:
        print(f"tlc-publisher: bad setting: {exc}", flush=True)
        return error(500)
    if now < published:
        return error(403)
    modified = revisions[-1] if revisions else published
    rows = month_rows(month, config.get("tlc_rows_per_month"), config.get("tlc_scale"))
    fault = request.fault if request.fault in FILE_FAULTS else None
    try:
        path, temporary = _file(request.state_dir, month, rows, len(revisions), fault)
    except ImportError as exc:
        print(f"tlc-publisher: cannot write parquet without {exc.name}: install pyarrow and numpy", flush=True)
        return error(500)
    try:
        return _answer(request, path, modified)
    finally:
        if temporary:
            path.unlink(missing_ok=True)  # an open handle keeps reading it


def _header(request, name: str) -> str | None:
    for key, value in request.headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _answer(request, path: Path, modified: datetime) -> Response:
    handle = open(path, "rb")  # noqa: SIM115 - closed below or by the stream
    try:
        size = os.fstat(handle.fileno()).st_size
        etag = _etag(path, handle)
    except BaseException:
        handle.close()
        raise
    headers = {"Content-Type": "application/octet-stream", "ETag": etag,
               "Last-Modified": format_datetime(modified.astimezone(UTC), usegmt=True), "Accept-Ranges": "bytes",
               "X-Cache": "Miss from cloudfront"}
    if _not_modified(request, etag, modified):
        handle.close()
        return Response(304, b"", {key: headers[key] for key in ("ETag", "Last-Modified")})
    start, length, status = 0, size, 200
    byte_range = _range(_header(request, "Range") or "", size)
    if byte_range == _UNSATISFIABLE:
        handle.close()
        response = error(416)
        response.headers["Content-Range"] = f"bytes */{size}"
        return response
    if byte_range is not None:  # S3 answers 206 to any valid single range, the whole file included
        start, length, status = byte_range[0], byte_range[1] - byte_range[0], 206
        headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    if request.method == "HEAD":
        handle.close()
        return Response(status, b"", headers, stream=iter(()), length=length)
    return Response(status, b"", headers, stream=_file_stream(handle, start, length), length=length)


def _not_modified(request, etag: str, modified: datetime) -> bool:
    if_none_match = _header(request, "If-None-Match")
    if if_none_match is not None:
        return if_none_match.strip() == "*" or etag in [tag.strip() for tag in if_none_match.split(",")]
    since = _header(request, "If-Modified-Since")
    if since:
        try:
            return modified.replace(microsecond=0) <= parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
    return False


_UNSATISFIABLE = (-1, -1)


def _range(text: str, size: int) -> tuple[int, int] | None:
    """(start, end) of a single `bytes=` range, end exclusive, or _UNSATISFIABLE; None for no range or one
    S3 ignores (several ranges, another unit, nonsense): the whole file with 200."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", text)
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size
        return (start, end) if int(last) > 0 and size else _UNSATISFIABLE
    start = int(first)
    if last and int(last) < start:
        return None  # an invalid range is ignored
    end = min(int(last) + 1, size) if last else size
    return (start, end) if start < size else _UNSATISFIABLE


def _file_stream(handle, start: int, length: int):
    with handle:
        handle.seek(start)
        while length > 0 and (chunk := handle.read(min(SERVE_CHUNK, length))):
            length -= len(chunk)
            yield chunk


_ETAGS: dict[tuple, str] = {}
_ETAGS_LOCK = threading.Lock()


def _etag(path: Path, handle) -> str:
    stat = os.fstat(handle.fileno())
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    with _ETAGS_LOCK:
        if key in _ETAGS:
            return _ETAGS[key]
    etag = s3_etag(path)
    with _ETAGS_LOCK:
        _ETAGS[key] = etag
    return etag


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_FALLBACK_DIR: list[Path] = []


def _cache_dir(state_dir: Path | None) -> Path:
    if state_dir is not None:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            return state_dir
        except OSError:
            pass
    with _LOCKS_GUARD:
        if not _FALLBACK_DIR:
            folder = Path(tempfile.mkdtemp(prefix="standin-tlc-publisher-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            _FALLBACK_DIR.append(folder)
        return _FALLBACK_DIR[0]


def _version_tag() -> str:
    return f"{GENERATOR_VERSION}-{tlc.GENERATOR_VERSION}-pa{_pa().__version__}"


def _file(state_dir: Path | None, month: str, rows: int, revision: int, fault: str | None) -> tuple[Path, bool]:
    """The month's file on disk, and whether it is a one-off (a faulted file: the caller removes it)."""
    version = _version_tag()  # imports pyarrow: without it, nothing is created
    folder = _cache_dir(state_dir)
    if fault:
        part = folder / f".yellow_tripdata_{month}.{fault}.{os.getpid()}.{threading.get_ident()}.part"
        write_month(part, month, rows, revision, fault)
        return part, True
    path = folder / f"yellow_tripdata_{month}.{rows}.r{revision}.{version}.parquet"
    if path.exists():
        return path, False
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(path, threading.Lock())
    with lock:  # a second first request waits for this generation
        if not path.exists():
            part = path.with_name(f".{path.name}.{os.getpid()}.part")
            try:
                write_month(part, month, rows, revision)
                with open(part, "rb") as written:
                    os.fsync(written.fileno())
                os.replace(part, path)
            finally:
                part.unlink(missing_ok=True)
            _remove_other_versions(folder, month)
    return path, False


def _remove_other_versions(folder: Path, month: str) -> None:
    for old in folder.glob(f"yellow_tripdata_{month}.*.parquet"):
        if not old.name.endswith(f".{_version_tag()}.parquet"):
            old.unlink(missing_ok=True)
