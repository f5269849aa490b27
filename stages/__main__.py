"""Allow `python -m stages <command>`; this is how dvc.yaml calls the CLI."""

from stages.cli import app

app(prog_name="mnist-pipeline")
