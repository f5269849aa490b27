"""Tools no stage runs, e.g. the builder of the offline `dvc plots` template."""
