"""Activation fusions: the element-wise chains exporters write for GELU, SiLU, HardSwish,
HardSigmoid and Mish become one op each.

Our canonical opset (18) has no Gelu and no Swish, so PyTorch, TF2ONNX and Hugging Face
exports spell them out (GELU alone is five to nine nodes). One op per activation makes the
backends' job simpler (one kernel with a known formula, e.g. a tanh-free GELU) and lets group
fusion treat the activation as a single epilogue op. Targets: ``lepton.Gelu``, ``lepton.SiLU``
(see `lepton_compiler.ops.composite`) and ONNX's own ``HardSwish``, ``HardSigmoid``, ``Mish``.

Constants are matched with a relative tolerance of 1e-4 (exporters write √2 as 1.4142135 or
1.41421); a constant outside it (GELU with 0.6 instead of 0.5) leaves the chain alone. Runs in
the fusion pipeline after ``fold_batchnorm`` and before group fusion; it does not depend on the
other pattern fusions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lepton_compiler.ir import Node, TensorType, Value
from lepton_compiler.pass_manager import register_pass
from lepton_compiler.rewriter import Builder, Const, Match, Op, RewritePass, Rule, Var

SQRT2 = math.sqrt(2.0)
TANH_SCALE = math.sqrt(2.0 / math.pi)  # 0.7978845608...
TANH_CUBIC = 0.044715


def scalar(value: float, rtol: float = 1e-4) -> Callable[[np.ndarray], bool]:
    """Predicate: a one-element constant equal to `value` (relative tolerance `rtol`)."""

    def pred(a: np.ndarray) -> bool:
        if a.size != 1 or a.dtype.kind not in "fiu":
            return False
        return bool(np.isclose(float(a.reshape(-1)[0]), value, rtol=rtol, atol=0.0))

    return pred


def _any_scalar(a: np.ndarray) -> bool:
    return a.size == 1 and a.dtype.kind == "f" and bool(np.isfinite(a).all())


def _float_x(m: Match) -> str | None:
    t = m["x"].type
    return None if isinstance(t, TensorType) and t.dtype.is_float else "x is not a float tensor"


def _gelu_rules() -> list[Rule]:
    """GELU in every association order exporters use, erf and tanh forms."""
    x = Var("x")
    half, one = Const("half", scalar(0.5)), Const("one", scalar(1.0))
    erf_args = {
        "div": Op("Div", x, Const("sqrt2", scalar(SQRT2)), name="scale_in"),
        "mul": Op("Mul", x, Const("inv_sqrt2", scalar(1 / SQRT2)), name="scale_in"),
    }
    cubes = {
        "pow": Op("Pow", x, Const("three", scalar(3.0)), name="cube"),
        "mul": Op("Mul", x, Op("Mul", x, x, name="square"), name="cube"),
    }
    gates: dict[str, tuple[Op, str]] = {}
    for form, arg in erf_args.items():
        gates[f"erf_{form}"] = (Op("Add", Op("Erf", arg, name="erf"), one, name="gate"), "none")
    for form, cube in cubes.items():
        inner = Op("Add", x, Op("Mul", Const("c", scalar(TANH_CUBIC)), cube, name="cubic"),
                   name="poly")  # fmt: skip
        arg = Op("Mul", Const("k", scalar(TANH_SCALE)), inner, name="scale_in")
        gates[f"tanh_{form}"] = (Op("Add", Op("Tanh", arg, name="tanh"), one, name="gate"), "tanh")

    rules = []
    for gname, (gate, approximate) in gates.items():
        shapes = {
            "xhalf_gate": Op("Mul", Op("Mul", x, half, name="x_half"), gate, name="out"),
            "xgate_half": Op("Mul", Op("Mul", x, gate, name="x_gate"), half, name="out"),
            "x_halfgate": Op("Mul", x, Op("Mul", half, gate, name="half_gate"), name="out"),
        }
        for sname, pattern in shapes.items():

            def rewrite(m: Match, b: Builder, _a: str = approximate) -> list[Value]:
                return [b.op("lepton.Gelu", m["x"], approximate=_a)]

            rules.append(Rule(f"gelu_{gname}_{sname}", pattern, rewrite, check=_float_x))
    return rules


def _hard_sigmoid_of(alpha: float, beta: float) -> Callable[[Node], bool]:
    def pred(node: Node) -> bool:
        a, b = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
        return bool(np.isclose(a, alpha, rtol=1e-4) and np.isclose(b, beta, rtol=1e-4))

    return pred


def _relu6_plus3(x: Var) -> Op:
    """``Clip(x + 3, 0, 6)``: ReLU6(x + 3) as exporters write it."""
    return Op("Clip", Op("Add", x, Const("three", scalar(3.0)), name="shift"),
              Const("lo", scalar(0.0)), Const("hi", scalar(6.0)), name="clip")  # fmt: skip


def _hard_rules() -> list[Rule]:
    """HardSwish and HardSigmoid from Clip / ReLU6 forms."""
    x = Var("x")
    six, sixth = Const("six", scalar(6.0)), Const("sixth", scalar(1 / 6))

    def hard_swish(m: Match, b: Builder) -> list[Value]:
        return [b.op("HardSwish", m["x"])]

    def hard_sigmoid_6(m: Match, b: Builder) -> list[Value]:
        return [b.op("HardSigmoid", m["x"], alpha=1 / 6, beta=0.5)]

    def hard_sigmoid(m: Match, b: Builder) -> list[Value]:
        slope = m.node("slope")
        a = float(m.const("a").reshape(-1)[0])
        alpha = 1.0 / a if slope.op == "Div" else a
        return [b.op("HardSigmoid", m["x"], alpha=alpha, beta=float(m.const("b").reshape(-1)[0]))]

    unit = (Const("lo", scalar(0.0)), Const("hi", scalar(1.0)))
    rules = [
        # x * HardSigmoid(x) with HardSwish's slope 1/6 and offset 1/2
        Rule("hardswish_from_hardsigmoid",
             Op("Mul", x, Op("HardSigmoid", x, name="gate", where=_hard_sigmoid_of(1 / 6, 0.5)),
                name="out"), hard_swish, check=_float_x),
        # x * ReLU6(x + 3) / 6 and x * ReLU6(x + 3) * (1/6)
        Rule("hardswish_div6", Op("Div", Op("Mul", x, _relu6_plus3(x), name="gated"), six,
                                  name="out"), hard_swish, check=_float_x),
        Rule("hardswish_mul_sixth", Op("Mul", Op("Mul", x, _relu6_plus3(x), name="gated"), sixth,
                                       name="out"), hard_swish, check=_float_x),
        # ReLU6(x + 3) / 6 and ReLU6(x + 3) * (1/6)
        Rule("hardsigmoid_relu6_div6", Op("Div", _relu6_plus3(x), six, name="out"),
             hard_sigmoid_6, check=_float_x),
        Rule("hardsigmoid_relu6_mul_sixth", Op("Mul", _relu6_plus3(x), sixth, name="out"),
             hard_sigmoid_6, check=_float_x),
    ]
    # Clip(x * a + b, 0, 1) and Clip(x / a + b, 0, 1)
    for slope in ("Mul", "Div"):
        affine = Op("Add", Op(slope, x, Const("a", _any_scalar), name="slope"),
                    Const("b", _any_scalar), name="offset")  # fmt: skip
        rules.append(Rule(f"hardsigmoid_clip_{slope.lower()}", Op("Clip", affine, *unit,
                                                                 name="out"),
                          hard_sigmoid, check=_float_x))
    return rules


def _swish_rules() -> list[Rule]:
    """SiLU (x * sigmoid(x)) and Mish (x * tanh(softplus(x)))."""
    x = Var("x")

    def silu(m: Match, b: Builder) -> list[Value]:
        return [b.op("lepton.SiLU", m["x"])]

    def mish(m: Match, b: Builder) -> list[Value]:
        return [b.op("Mish", m["x"])]

    softplus_log = Op("Log", Op("Add", Op("Exp", x, name="exp"), Const("one", scalar(1.0)),
                                name="exp_plus_1"), name="softplus")  # fmt: skip
    return [
        Rule("silu", Op("Mul", x, Op("Sigmoid", x, name="gate"), name="out"), silu,
             check=_float_x),
        Rule("mish", Op("Mul", x, Op("Tanh", Op("Softplus", x, name="softplus"), name="gate"),
                        name="out"), mish, check=_float_x),
        Rule("mish_log_exp", Op("Mul", x, Op("Tanh", softplus_log, name="gate"), name="out"),
             mish, check=_float_x),
    ]


@register_pass
class FuseActivationsPass(RewritePass):
    """Fuse GELU (erf/tanh), SiLU, HardSwish, HardSigmoid and Mish chains into single ops.

    Forms matched (Mul/Add operands in either order):

    - GELU, erf: ``x·½·(1 + Erf(x/√2))`` as ``Mul(Mul(x, ½), g)``, ``Mul(Mul(x, g), ½)`` or
      ``Mul(x, Mul(½, g))`` with ``g = Add(Erf(Div(x, √2) | Mul(x, 1/√2)), 1)``
      → ``lepton.Gelu(approximate="none")``;
    - GELU, tanh: the same three shapes with
      ``g = Add(Tanh(Mul(√(2/π), Add(x, Mul(0.044715, Pow(x, 3) | Mul(x, Mul(x, x)))))), 1)``
      → ``lepton.Gelu(approximate="tanh")``;
    - ``Mul(x, Sigmoid(x))`` → ``lepton.SiLU``;
    - ``Mul(x, HardSigmoid(x; α=1/6, β=½))``, ``Div(Mul(x, Clip(x+3, 0, 6)), 6)``,
      ``Mul(Mul(x, Clip(x+3, 0, 6)), 1/6)`` → ``HardSwish``;
    - ``Div(Clip(x+3, 0, 6), 6)``, ``Mul(Clip(x+3, 0, 6), 1/6)`` → ``HardSigmoid(1/6, ½)``;
      ``Clip(Add(Mul(x, a) | Div(x, a), b), 0, 1)`` → ``HardSigmoid(α=a | 1/a, β=b)``
      (so ``x · (ReLU6(x+3)/6)`` becomes HardSigmoid, then HardSwish);
    - ``Mul(x, Tanh(Softplus(x) | Log(Add(Exp(x), 1))))`` → ``Mish``.
    """

    name = "fuse_activations"

    def rules(self) -> list[Rule]:
        return [*_gelu_rules(), *_hard_rules(), *_swish_rules()]
