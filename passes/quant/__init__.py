"""Int8 quantization passes."""
