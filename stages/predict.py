"""Stage `predict` of dvc.yaml: classify the prepared test digits, write data/predictions.csv.

`python -m stages.predict --help` lists its options (the same as `mnist-pipeline predict`).
"""

from mnist_pipeline.core.kernels import pin_portable_kernels

if __name__ == "__main__":
    pin_portable_kernels()  # before torch loads: the same bytes on every x86-64 CPU
    from mnist_pipeline.cli.common import run_command
    from mnist_pipeline.cli.pipeline import predict

    run_command(predict, prog_name="python -m stages.predict")
