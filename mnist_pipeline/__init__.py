"""mnist-pipeline: the classic PyTorch MNIST tutorial as a reproducible DVC pipeline.

The library behind the five stage entry points in `stages/` and the `mnist-pipeline`
command: `core` (types, params, errors, limits, artifact I/O; imports nothing above it),
`data` (split, prepare), `formats` (readers), `model`, `training`, `reports`, `serving`
and `cli`. Importing any of it only defines things: the CPU kernel pins that the
entry points need before torch loads are one call, `mnist_pipeline.core.kernels`.
"""
