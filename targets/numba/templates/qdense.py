"""Integer matrix products (``lepton.QMatMul``: uint8/int8 ``a [..., K]`` times a constant int8
``b [K, N]``) with the float epilogue and a final ``QuantizeLinear`` fused into the store, and
the exact product that the integer conv template (`qconv`) shares.

How the integer sum is computed: the centered activations ``a - a_zero_point`` and the int8
weights are widened to float32 and multiplied with ``np.dot`` (OpenBLAS sgemm). Every product
and every partial sum is an integer, and float32 holds every integer up to 2^24 exactly, so
the result is the exact int32 accumulator whenever ``max|a - zp| * sum_k |b[k, n]| <= 2^24``
for every output column ``n``. The weights are constants, so `k_chunks` checks this bound at
compile time on the actual weights and, where it fails, splits the reduction into the fewest
equal chunks that keep each partial product exact; the chunk results are summed in int32.
The epilogue adds the int32 bias in int32, scales by ``float32(a_scale) * float32(b_scale[n])``
(one float32 rounding, as the reference), runs the float chain and stores float32 or, after a
QuantizeLinear, uint8/int8.

Why not integer loops: the best integer loop Numba vectorized here (int16 operands, the
reduction innermost over contiguous memory, LLVM emits ``vpmaddwd``/``vpdpwssd``) measured
1.1-2x slower than sgemm on the same shapes (2 threads; ``[64, 576] @ [576, 3136]``
2.1-4.2 ms against 1.9-2.0 ms, ``[3072, 768] @ [768, 128]`` 4.9-7.1 ms against 3.6-3.9 ms), and
float64 dgemm (exact without chunks) about 2x slower than sgemm. So the integer kernels run at
about the speed of the float32 ones (docs/numba-backend.md has the measurements).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node, TensorType, Value
from lepton_compiler.ops.quant import combined_scale

from ..emit import Constants, Lines, module_text
from ..epilogue import Chain, static_shape
from . import KernelSource
from .loops import row_tiles

__all__ = ["IntegerOperands", "integer_operands", "k_chunks", "max_deviation", "requantize"]

NAME = "qdense"
ANCHORS = ("lepton.QMatMul",)

#: Integers up to this magnitude are exact in float32.
EXACT_F32 = 2**24

#: The input dtypes the integer ops take.
_X_DTYPES = ("uint8", "int8")


def max_deviation(dtype: str, zero_point: int) -> int:
    """The largest ``|x - zero_point|`` an input of `dtype` (uint8/int8) can have."""
    info = np.iinfo(dtype)
    return max(abs(int(info.min) - zero_point), abs(int(info.max) - zero_point))


def k_chunks(w: np.ndarray, max_dev: int) -> int:
    """The fewest equal chunks of the reduction (last axis of `w`, ``[outputs, K]``) such that
    every chunk's partial sums are exact in float32: ``max_dev * sum |w| <= 2^24`` per output
    and chunk.

    Raises:
        LoweringError: the whole sum may overflow int32.
    """
    absw = np.abs(np.asarray(w, dtype=np.int64)).reshape(w.shape[0], -1)
    k = absw.shape[1]
    if max_dev * int(absw.sum(axis=1).max(initial=0)) >= 2**31:
        raise LoweringError("the int32 accumulator could overflow for these weights")
    for chunks in range(1, k + 1):
        kc = math.ceil(k / chunks)
        padded = np.zeros((absw.shape[0], chunks * kc), np.int64)
        padded[:, :k] = absw
        if max_dev * int(padded.reshape(absw.shape[0], chunks, kc).sum(axis=2).max()) <= EXACT_F32:
            return chunks
    return k  # not reached: one term is at most 128 * 255 < 2^24


@dataclass
class IntegerOperands:
    """The resolved inputs of a ``lepton.QConv``/``lepton.QMatMul`` in a group.

    Attributes:
        x: fused-node input index of the activations.
        zero_point_input: index of the activations' zero point.
        w: index of the weights; ``bias``: of the int32 bias (None when absent).
        w_scale: index of the weight scale.
        x_dtype: ``"uint8"`` or ``"int8"``.
        zero_point: the activations' zero point.
        x_scale, weights, weight_scale: the constant values.
    """

    x: int
    zero_point_input: int
    w: int
    w_scale: int
    bias: int | None
    x_dtype: str
    zero_point: int
    x_scale: np.ndarray
    weights: np.ndarray
    weight_scale: np.ndarray

    @property
    def indices(self) -> list[int]:
        """Every fused-node input the integer op reads (the chain must not take them)."""
        every = (self.x, self.zero_point_input, self.w, self.w_scale, self.bias)
        return [i for i in every if i is not None]

    def check_scale(self, fused: Node, outputs: int) -> None:
        """The weight scale is per tensor or has one value per output channel.

        Raises:
            LoweringError: it has another size.
        """
        if self.weight_scale.size not in (1, outputs):
            raise LoweringError(
                f"{fused.name}: {self.weight_scale.size} weight scales for {outputs} outputs"
            )


def integer_operands(fused: Node, node: Node) -> IntegerOperands:
    """Check an integer op's inputs: activations uint8/int8 from outside the group, constant
    scalar scale and zero point, constant int8 weights and scales, int32 bias.

    Raises:
        LoweringError: naming the input that does not fit.
    """
    body: Graph = fused.attrs["body"]
    body_in = {bv: i for i, bv in enumerate(body.inputs)}
    ins = list(node.inputs) + [None] * (6 - len(node.inputs))

    def index(pos: int) -> int | None:
        v = ins[pos]
        if v is None:
            return None
        if v not in body_in:
            raise LoweringError(f"{fused.name}: {node.op} reads a value made inside the group")
        return body_in[v]

    def const(pos: int, what: str) -> np.ndarray:
        i = index(pos)
        c = fused.inputs[i].const if i is not None else None  # type: ignore[union-attr]
        if c is None:
            raise LoweringError(f"{fused.name}: {node.op} needs a constant {what}")
        return np.asarray(c)

    x_idx, zp_idx, w_idx, ws_idx = index(0), index(2), index(3), index(4)
    if x_idx is None or zp_idx is None or w_idx is None or ws_idx is None:
        raise LoweringError(f"{fused.name}: {node.op} needs x, x_zero_point, w and w_scale")
    x_dtype = _dtype_name(ins[0])
    if x_dtype not in _X_DTYPES:
        raise LoweringError(f"{fused.name}: {node.op} input is {x_dtype}, not uint8/int8")
    x_scale = const(1, "input scale")
    zp = const(2, "input zero point")
    if x_scale.size != 1 or zp.size != 1:
        raise LoweringError(f"{fused.name}: {node.op} needs a per-tensor input scale/zero point")
    weights = const(3, "weight")
    if weights.dtype != np.int8:
        raise LoweringError(f"{fused.name}: {node.op} weights are {weights.dtype}, not int8")
    bias_idx = index(5)
    if bias_idx is not None and _dtype_name(ins[5]) != "int32":
        raise LoweringError(f"{fused.name}: {node.op} bias is not int32")
    return IntegerOperands(
        x=x_idx,
        zero_point_input=zp_idx,
        w=w_idx,
        w_scale=ws_idx,
        bias=bias_idx,
        x_dtype=x_dtype,
        zero_point=int(zp.reshape(())),
        x_scale=x_scale,
        weights=weights,
        weight_scale=const(4, "weight scale"),
    )


def _dtype_name(v: Value | None) -> str:
    if v is None or not isinstance(v.type, TensorType):
        return "?"
    return np.dtype(v.type.dtype.numpy).name


def requantize(
    code: Lines,
    consts: Constants,
    chain: Chain,
    acc: str,
    bias: str | None,
    scale: str,
    coords: list[str],
) -> str:
    """Write ``q = acc (+ bias)`` in int32, ``y = float32(q) * scale`` and the chain; return
    the value to store. (Numba adds int32s in int64; the explicit int32 keeps the conversion
    to float32 in 32-bit lanes: 0.072 against 0.107 ms for a 64 x 3136 requantizing store.)"""
    code(f"q = np.int32({acc}" + (f" + {bias})" if bias else ")"))
    code(f"y = np.float32(q) * {scale}")
    return chain.lines(code, consts, "y", coords)


def plan(fused: Node, tiles: int = 1) -> KernelSource:
    """Write the integer product and its epilogue (see the module docstring).

    Raises:
        LoweringError: not a QMatMul group, a 1-D ``a``, non-constant weights or scales, or
            an epilogue the chain table cannot write.
    """
    body: Graph = fused.attrs["body"]
    node = next(iter(body))
    if node.op not in ANCHORS:
        raise LoweringError(f"{fused.name}: not a lepton.QMatMul group")
    ops = integer_operands(fused, node)
    a_s, y_s = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    if len(a_s) < 2 or ops.weights.ndim != 2 or 0 in a_s or 0 in y_s:
        raise LoweringError(f"{fused.name}: QMatMul needs a [..., K] input (rank >= 2)")
    k, n = ops.weights.shape
    ops.check_scale(fused, n)
    rows, r = math.prod(a_s[:-1]), len(y_s)
    chain = Chain.plan(
        fused,
        ANCHORS,
        groups=lambda o, s: [list(range(r - 1)), [r - 1]],
        skip_inputs=ops.indices,
        int_output=True,
    )
    chunks = k_chunks(ops.weights.T, max_deviation(ops.x_dtype, ops.zero_point))
    kc = math.ceil(k / chunks)
    consts = Constants()
    code = Lines()
    code("zp = xzp[0]")
    bias = "b[j]" if ops.bias is not None else None
    if tiles > 1:
        row_tiles(code, rows, tiles)
        code("i0 = t * step", f"i1 = min({rows}, i0 + step)")
        loop, sl = "for i in range(i0, i1):", "i0:i1"
    else:
        loop, sl = f"for i in prange({rows}):", ""
    code(loop).indent()
    _convert_row(code, k, kc, chunks)
    code.dedent()
    for ch in range(chunks):
        af, prod = (f"af[{ch}, {sl}]", f"prod[{sl}]") if sl else (f"af[{ch}]", "prod")
        code(f"np.dot({af}, w[{ch}], {prod})")
        if ch < chunks - 1:
            code(loop).indent()
            code(f"for j in range({n}):").indent()
            code(f"acc[i, j] {'=' if ch == 0 else '+='} np.int32(prod[i, j])")
            code.dedent().dedent()
    code(loop).indent()
    code(f"for j in range({n}):").indent()
    total = "np.int32(prod[i, j])" + (" + acc[i, j]" if chunks > 1 else "")
    value = requantize(code, consts, chain, total, bias, "s[j]", ["i", "j"])
    code(f"out[i, j] = {value}")

    b_param = [] if ops.bias is None else ["b"]
    params = ["a", "xzp", "w", "s", *b_param, *(op.name for op in chain.operands), "out"]
    params += ["af", "prod", *(["acc"] if chunks > 1 else [])]
    scale_of = ops.x_scale

    def pack_b(b: np.ndarray) -> np.ndarray:
        packed = np.zeros((chunks * kc, n), np.float32)
        packed[:k] = b
        return packed.reshape(chunks, kc, n)

    doc = [
        f"QMatMul {list(a_s)} ({ops.x_dtype}) @ [{k}, {n}] (int8) -> {list(y_s)} "
        f"({chain.out_dtype}); bias: {ops.bias is not None}; epilogue: "
        f"{' -> '.join(chain.ops) or 'none'}.",
        "",
        f"Exact float32 products (np.dot) in {chunks} chunk(s) of {kc} along K"
        + (", one tile of rows per thread." if tiles > 1 else ", then a parallel epilogue."),
    ]
    return KernelSource(
        name="qmatmul",
        source=module_text(doc, "qmatmul", params, code, consts),
        input_indices=[
            ops.x,
            ops.zero_point_input,
            ops.w,
            ops.w_scale,
            *([ops.bias] if ops.bias is not None else []),
            *(op.index for op in chain.operands),
        ],
        param_shapes=[
            (rows, k),
            (1,),
            (chunks, kc, n),
            (n,),
            *([(n,)] if ops.bias is not None else []),
            *(op.shape for op in chain.operands),
        ],
        param_dtypes=[
            ops.x_dtype,
            "float32",
            "float32",
            "float32",
            *(["int32"] if ops.bias is not None else []),
            *(op.dtype for op in chain.operands),
        ],
        output_shapes=[(rows, n)],
        output_dtypes=[chain.out_dtype],
        scratch=[
            ((chunks, rows, kc), "float32"),
            ((rows, n), "float32"),
            *([((rows, n), "int32")] if chunks > 1 else []),
        ],
        packs={
            2: pack_b,
            3: lambda ws: combined_scale(scale_of, ws, n),
        },
        ops=["lepton.QMatMul", *chain.ops],
    )


def _convert_row(code: Lines, k: int, kc: int, chunks: int) -> None:
    """Row ``i`` of ``a`` centered and widened into ``af[chunk, i]`` (zeros past K)."""
    code("src = a[i]")
    for ch in range(chunks):
        k0, k1 = ch * kc, min(k, (ch + 1) * kc)
        code(f"dst = af[{ch}, i]", f"part = src[{k0}:{k1}]")
        code(f"for k in range({k1 - k0}):").indent()
        code("dst[k] = np.float32(part[k]) - zp").dedent()
        if k1 - k0 < kc:
            code(f"dst[{k1 - k0}:] = 0.0")
