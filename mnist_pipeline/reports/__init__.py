"""What `evaluate` writes: scores, plot tables and pictures."""
