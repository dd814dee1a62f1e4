-- yellow_taxi_trips v1: every column of the TLC yellow CSV with its natural type, plus data_month
-- (first day of the file's month). Partitioned by data_month: a month is one partition, replaced
-- whole by each load (TRUNCATE + COPY in one transaction). Idempotent.
CREATE TABLE IF NOT EXISTS yellow_taxi_trips (
    "VendorID"              bigint,
    "tpep_pickup_datetime"  timestamp,
    "tpep_dropoff_datetime" timestamp,
    "passenger_count"       bigint,
    "trip_distance"         double precision,
    "RatecodeID"            bigint,
    "store_and_fwd_flag"    text,
    "PULocationID"          bigint,
    "DOLocationID"          bigint,
    "payment_type"          bigint,
    "fare_amount"           double precision,
    "extra"                 double precision,
    "mta_tax"               double precision,
    "tip_amount"            double precision,
    "tolls_amount"          double precision,
    "improvement_surcharge" double precision,
    "total_amount"          double precision,
    "congestion_surcharge"  double precision,
    data_month              date NOT NULL
) PARTITION BY LIST (data_month);
