"""Stage `prepare` of dvc.yaml: the digits named by params `inputs.*` -> tensors.

`python -m stages.prepare --help` lists its options (the same as `mnist-pipeline prepare`).
"""

from mnist_pipeline.core.kernels import pin_portable_kernels

if __name__ == "__main__":
    pin_portable_kernels()  # before torch loads: the same bytes on every x86-64 CPU
    from mnist_pipeline.cli.common import run_command
    from mnist_pipeline.cli.pipeline import prepare

    run_command(prepare, prog_name="python -m stages.prepare")
