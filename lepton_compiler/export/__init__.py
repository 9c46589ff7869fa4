"""Model exporters: IR → ONNX."""
