"""Stage `split` of dvc.yaml: the bundled digits -> data/raw/{train,test}.csv.

`python -m stages.split --help` lists its options (the same as `mnist-pipeline split`).
"""

from mnist_pipeline.core.kernels import pin_portable_kernels

if __name__ == "__main__":
    pin_portable_kernels()  # before torch loads: the same bytes on every x86-64 CPU
    from mnist_pipeline.cli.common import run_command
    from mnist_pipeline.cli.pipeline import split

    run_command(split, prog_name="python -m stages.split")
