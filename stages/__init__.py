"""mnist-pipeline: the classic PyTorch MNIST tutorial as a reproducible DVC pipeline."""
