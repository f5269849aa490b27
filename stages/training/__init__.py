"""Training machinery: device and determinism, batches, augmentation, optimisation,
checkpoints, data-parallel processes, logging and progress. The stage is stages/train.py."""
