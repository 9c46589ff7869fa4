"""TVM backend: fused groups lowered to TE compute, scheduled by our own templates, built with
`tvm.compile`.

Modules: `te_ops` (TE compute builders from IR nodes and `lower_group`), `schedules` (hand
schedule templates per target), `build` (`build_group` with an in-memory kernel cache) and
`bench_conv` (kernel vs ONNX Runtime timings). Importing this package does not import tvm;
the submodules do.
"""
