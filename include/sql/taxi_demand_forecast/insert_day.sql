INSERT INTO taxi_demand_forecast (issued_on, day, lead_days, predicted_trips, model_version, baseline_trips)
VALUES (%(issued_on)s, %(day)s, %(lead_days)s, %(predicted_trips)s, %(model_version)s, %(baseline_trips)s);
