-- Trips of one month's file (data_month) per New York calendar day. TLC pickup times are New York
-- wall-clock times (naive timestamps), so the day is the pickup's date. Pickups outside the month -
-- real files carry a few, from other months or years - fall in the row whose day is NULL: counted
-- apart, never attributed to a day.
SELECT CASE WHEN tpep_pickup_datetime >= %(first_day)s AND tpep_pickup_datetime < %(after_day)s
            THEN tpep_pickup_datetime::date END AS day,
       count(*) AS trips,
       sum(fare_amount) AS total_fare,
       avg(fare_amount) AS mean_fare,
       avg(trip_distance) AS mean_distance
FROM yellow_taxi_trips
WHERE data_month = %(data_month)s
GROUP BY 1
ORDER BY 1;
