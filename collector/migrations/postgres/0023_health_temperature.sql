-- The hottest sensor of each health sample (issue 22: the host page charts
-- temperatures over a day and a week). NULL when the PC reports no sensor;
-- an hourly point keeps the hour's highest reading.
ALTER TABLE health_samples ADD COLUMN temperature_max_celsius REAL;
