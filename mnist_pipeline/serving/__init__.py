"""`mnist-pipeline serve` (a FastAPI app and its drawing page) and `export` (ONNX)."""
