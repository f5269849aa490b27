"""The pipeline's five entry points, one per stage of dvc.yaml, in the pipeline's order:
split.py, prepare.py, train.py, predict.py, evaluate.py.

Each parses its options, pins the portable CPU kernels and calls the `mnist_pipeline`
library. DVC runs them as `python -m stages.<name>`, which imports the library from this
checkout (not an installed copy), as DVC experiments' temporary copies need. This folder
is not installed: `mnist-pipeline <name>` runs the same command from anywhere.
"""
