"""Stage `train` of dvc.yaml: prepared training tensors -> the model file.

`python -m stages.train --help` lists its options (the same as `mnist-pipeline train`).
"""

from mnist_pipeline.core.kernels import pin_portable_kernels

if __name__ == "__main__":
    pin_portable_kernels()  # before torch loads: the same bytes on every x86-64 CPU
    from mnist_pipeline.cli.common import run_command
    from mnist_pipeline.cli.pipeline import train

    run_command(train, prog_name="python -m stages.train")
