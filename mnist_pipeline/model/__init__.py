"""The networks and the model file: what `train` writes and `predict` reads."""
