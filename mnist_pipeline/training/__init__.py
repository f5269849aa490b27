"""Training machinery: device and determinism, batches, augmentation, optimisation,
checkpoints, data-parallel processes, logging and progress. `run.py` is the train stage's work."""
