"""Graph→graph passes, grouped by purpose: `cleanup`, `fusion`, `quant`, `prune`, `layout`.

Installed as `lepton_compiler.passes`. Passes see only the IR: they never import onnx, tvm,
numba or `lepton_compiler.targets`; target capabilities come from the `PassContext`.
"""
