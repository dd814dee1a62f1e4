-- The score of one issue date's forecast; a re-score (more days with actuals, a re-run) replaces it.
INSERT INTO taxi_demand_forecast_accuracy (issued_on, model_version, days_scored, mae, mape, baseline_mape,
                                           mape_observed_weather)
VALUES (%(issued_on)s, %(model_version)s, %(days_scored)s, %(mae)s, %(mape)s, %(baseline_mape)s,
        %(mape_observed_weather)s)
ON CONFLICT (issued_on, model_version) DO UPDATE
SET days_scored = EXCLUDED.days_scored, mae = EXCLUDED.mae, mape = EXCLUDED.mape,
    baseline_mape = EXCLUDED.baseline_mape, mape_observed_weather = EXCLUDED.mape_observed_weather, scored_at = now();
