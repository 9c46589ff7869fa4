"""Model importers: ONNX → IR."""
