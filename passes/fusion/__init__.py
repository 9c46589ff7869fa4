"""Fusion passes: fold affine ops into their producers, fuse patterns, form fused groups."""
