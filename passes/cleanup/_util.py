"""Small helpers shared by cleanup passes."""

from __future__ import annotations

#: Ops whose result differs from run to run: never folded, never merged.
NONDETERMINISTIC = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
     "Multinomial"}
)  # fmt: skip
