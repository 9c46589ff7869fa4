"""AVX-512 VNNI for int8 kernels: the feature check, the ``vpdpbusd`` expression our kernels
emit, and a re-registration of TVM's ``dot_16x4_vnni`` tensor intrinsic that LLVM 22 accepts.

``vpdpbusd acc, a, b`` adds, to each int32 lane of ``acc``, the dot product of the lane's four
unsigned bytes of ``a`` with its four signed bytes of ``b`` (exact: no intermediate
saturation). LLVM 22 declares ``llvm.x86.avx512.vpdpbusd.512`` on ``<16 x i32>, <64 x i8>,
<64 x i8>``; TVM 0.27's built-in ``dot_16x4_vnni`` still passes ``<16 x i32>`` operands and
fails the verifier ("Call parameter type does not match function signature"). `vpdpbusd`
reinterprets its operands as bytes, and `register_dot_16x4_vnni` overrides the intrinsic
with an implementation that does the same (for schedules that ``tensorize``).

Emitting the instruction for a CPU without VNNI aborts the process inside LLVM ("Cannot
select ... VPDPBUSD"), which Python cannot catch: every kernel asks `has_vnni` first.
Importing ``tvm.s_tir.tensor_intrin`` costs about 20 s (it parses every tensor intrinsic,
CUDA's included), so `register_dot_16x4_vnni` imports it lazily, once per process; the
``lepton.QConv``/``lepton.QMatMul`` kernels call `vpdpbusd` directly and never need it.
"""

from __future__ import annotations

import threading
from typing import Any

import tvm
from tvm import tirx

__all__ = ["VNNI_INTRIN", "has_vnni", "register_dot_16x4_vnni", "vpdpbusd"]

#: The name of TVM's VNNI tensor intrinsic (16 int32 lanes x 4 byte pairs).
VNNI_INTRIN = "dot_16x4_vnni"
_LLVM_INTRIN = "llvm.x86.avx512.vpdpbusd.512"

_registered = False
_lock = threading.Lock()


def has_vnni(target: Any) -> bool:
    """Whether `target` (a `tvm.target.Target` or a target dict) is an x86 CPU with
    AVX-512 VNNI (``vpdpbusd`` on zmm registers)."""
    tgt = target if isinstance(target, tvm.target.Target) else tvm.target.Target(dict(target))
    if tgt.kind.name != "llvm":
        return False
    triple = str(tgt.attrs.get("mtriple", "") or "")
    if triple and not triple.startswith(("x86_64", "i686", "i386")):
        return False
    return bool(tvm.target.codegen.llvm_cpu_has_features(["avx512vnni"], tgt))


def vpdpbusd(acc: Any, a: Any, b: Any) -> Any:
    """``acc + dot4(a as uint8x64, b as int8x64)`` per int32 lane: all three are int32x16
    expressions (each lane of ``a``/``b`` holds four bytes, little-endian)."""
    return tirx.call_llvm_pure_intrin(
        "int32x16",
        _LLVM_INTRIN,
        acc,
        tirx.reinterpret("uint8x64", a),
        tirx.reinterpret("int8x64", b),
    )


def dot4_generic(acc: Any, a: Any, b: Any) -> Any:
    """What `vpdpbusd` computes, in plain int32 arithmetic (for targets without VNNI):
    each byte of ``a`` is unsigned, each byte of ``b`` signed."""
    total = acc
    for i in range(4):
        ai = tirx.bitwise_and(tirx.shift_right(a, tirx.const(8 * i, "int32")),
                              tirx.const(255, "int32"))  # fmt: skip
        bi = tirx.shift_right(tirx.shift_left(b, tirx.const(24 - 8 * i, "int32")),
                              tirx.const(24, "int32"))  # fmt: skip
        total = total + ai * bi
    return total


def register_dot_16x4_vnni() -> None:
    """Re-register ``dot_16x4_vnni`` (same description: ``C[16] += A[4] (u8) . B[16, 4]
    (s8)``) with an implementation LLVM 22 verifies. Idempotent; the first call imports
    TVM's tensor intrinsics (about 20 s)."""
    global _registered
    with _lock:
        if _registered:
            return
        from tvm.s_tir import TensorIntrin
        from tvm.s_tir.tensor_intrin import x86  # registers the originals (slow import)
        from tvm.script import tirx as T

        @T.prim_func(s_tir=True)
        def impl(
            A: T.Buffer((4,), "uint8", offset_factor=1),
            B: T.Buffer((16, 4), "int8", offset_factor=1),
            C: T.Buffer((16,), "int32", offset_factor=1),
        ) -> None:
            with T.sblock("root"):
                T.reads(C[0:16], A[0:4], B[0:16, 0:4])
                T.writes(C[0:16])
                a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
                C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                    "int32x16",
                    _LLVM_INTRIN,
                    C.vload([0], dtype="int32x16"),
                    T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64"),
                    B.vload([0, 0], dtype="int8x64"),
                )

        TensorIntrin.register(VNNI_INTRIN, x86.dot_product_16x4_u8i8i32_desc, impl, override=True)
        _registered = True
