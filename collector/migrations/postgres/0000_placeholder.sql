-- Placeholder so the migrator has a directory; replaced by the port of 0001.
SELECT 1;
