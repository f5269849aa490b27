"""The `mnist-pipeline` command line: `app.py` assembles it, `pipeline.py` holds the five stage
commands, `tools.py` serve, export and the plots template, `common.py` what they share."""
