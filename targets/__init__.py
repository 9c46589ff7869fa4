"""Code generation targets and backends, installed as `lepton_compiler.targets`."""
