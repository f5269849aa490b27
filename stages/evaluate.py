"""Stage `evaluate` of dvc.yaml: score the predictions: metrics JSON, plot tables and pictures.

`python -m stages.evaluate --help` lists its options (the same as `mnist-pipeline evaluate`).
"""

from mnist_pipeline.core.kernels import pin_portable_kernels

if __name__ == "__main__":
    pin_portable_kernels()  # before torch loads: the same bytes on every x86-64 CPU
    from mnist_pipeline.cli.common import run_command
    from mnist_pipeline.cli.pipeline import evaluate

    run_command(evaluate, prog_name="python -m stages.evaluate")
