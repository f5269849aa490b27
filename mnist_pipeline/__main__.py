"""`python -m mnist_pipeline <command>`: the `mnist-pipeline` command from this checkout."""

from mnist_pipeline.cli.app import main

main()
