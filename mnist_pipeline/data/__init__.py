"""The split and prepare stages' work: bundled digits -> CSVs -> validated tensors."""
