"""Benchmarks: standard models built locally (`benchmarks.models`) and their runners.

Benchmarks are not tests (DESIGN.md §11): they run each configuration beside ONNX Runtime
and report timings. The model builders here are also what the end-to-end tests import.
"""
