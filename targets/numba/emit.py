"""Pieces of generated kernel source: the module frame, named constants, indented lines.

Every kernel module has the same frame, so that a reader finds the same things in the same
places: a docstring saying which group it computes (ops, shapes), the imports, the named
float32 constants it uses, and one function decorated
``@njit(parallel=True, fastmath=True, error_model="numpy", cache=True)`` (without
``parallel=True`` for kernels with little work, `serial`) that takes the group's inputs,
then its outputs, then scratch buffers, and returns nothing. The text is the cache key
(`source_cache`), so it must depend only on what the code computes: shapes, attributes and
constant scalars, never on value names or addresses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["Constants", "Lines", "module_text", "serial"]

#: NumPy's error model: a division by zero gives inf or nan, as in the reference kernels,
#: instead of raising ZeroDivisionError (and costs no zero test per division).
_DECORATOR = '@njit(parallel=True, fastmath=True, error_model="numpy", cache=True)'
_SERIAL = '@njit(fastmath=True, error_model="numpy", cache=True)'


class Constants:
    """Named float32 constants of one module (``C0 = np.float32(0.5)``), deduplicated."""

    def __init__(self) -> None:
        self._names: dict[float, str] = {}

    def __call__(self, value: float) -> str:
        """The name of the constant `value` (rounded to float32), added on first use."""
        v = float(np.float32(value))
        if v not in self._names:
            self._names[v] = f"C{len(self._names)}"
        return self._names[v]

    def lines(self) -> list[str]:
        """The module-level assignments, in order of first use."""
        return [f"{name} = np.float32({_literal(v)})" for v, name in self._names.items()]


def _literal(v: float) -> str:
    if v != v:
        return "np.nan"
    if v in (float("inf"), float("-inf")):
        return "np.inf" if v > 0 else "-np.inf"
    return repr(v)


class Lines:
    """Source lines with an indentation level (4 spaces a level)."""

    def __init__(self, level: int = 1) -> None:
        self.level = level
        self.text: list[str] = []

    def __call__(self, *lines: str) -> Lines:
        for line in lines:
            self.text.append("    " * self.level + line)
        return self

    def indent(self) -> Lines:
        self.level += 1
        return self

    def dedent(self) -> Lines:
        self.level -= 1
        return self


def module_text(
    doc: Sequence[str], name: str, params: Sequence[str], body: Lines, consts: Constants
) -> str:
    """The full module source of one kernel.

    Args:
        doc: docstring lines (what the kernel computes; shapes).
        name: the function's name.
        params: parameter names (inputs, outputs, scratch).
        body: the function body (indented one level).
        consts: the constants the body names.
    """
    out = ['"""' + doc[0], *doc[1:], '"""', "", "import math", "", "import numpy as np"]
    out += ["from numba import njit, prange", ""]
    out += consts.lines()
    out += ["", "", _DECORATOR, f"def {name}({', '.join(params)}):", *body.text]
    text = "\n".join(out) + "\n"
    # math/prange are imported in every module to keep the frame fixed; silence linters
    return text.replace("import math\n", "import math  # noqa: F401\n", 1).replace(
        "from numba import njit, prange\n", "from numba import njit, prange  # noqa: F401\n", 1
    )


def serial(source: str) -> str:
    """The module with its function compiled without ``parallel=True`` (its ``prange``
    loops then run as ``range``): for kernels with little work (`work.SMALL_WORK`)."""
    return source.replace(_DECORATOR, _SERIAL, 1)
