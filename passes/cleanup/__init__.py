"""Cleanup passes: dead code, no-ops, constant folding, common subexpressions."""
