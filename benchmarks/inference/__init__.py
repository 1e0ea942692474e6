"""Side-by-side inference benchmark: torch eager vs Hoichan's ONNX Runtime pipelines."""
