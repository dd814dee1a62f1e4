-- Every row of one issue date, before its rows are inserted again (same transaction).
DELETE FROM taxi_demand_forecast WHERE issued_on = %(issued_on)s;
