"""A small helper that builds ONNX graphs layer by layer, the way exporters lay them out.

The benchmark models are written with this class instead of PyTorch so that the project needs
no deep-learning framework and every model is reproducible from a seed. Each layer method adds
the nodes an exporter (``torch.onnx.export`` without BatchNorm folding) would emit for that
layer, with random initializers scaled so that activations stay O(1) through deep networks:

- convolutions and linear layers use He (Kaiming normal) initialisation, which keeps the
  variance of ReLU networks constant from layer to layer;
- BatchNormalization gets the running statistics those weights really produce: the builder
  can trace a random calibration batch through the layers it adds (a few numpy lines per
  op) and sets each BN's ``running_mean``/``running_var`` to the per-channel statistics of
  its input, as a freshly initialised network would learn them. Without that, fixed
  statistics do not normalize anything and a 50-layer residual net grows its activations
  a hundredfold. Callers shrink ``gamma`` for the last BN of a residual branch, so that
  residual sums grow slowly with depth;
- transformer weights use BERT's own ``N(0, 0.02)``.

Names are unique and readable (``layer1.0.conv2.weight``, ``/layer1.0.conv2/Conv``...), in the
spirit of PyTorch's exporter, so that the graphs are easy to read in Netron or our printer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

#: The ai.onnx opset and IR version every benchmark model is written with.
OPSET = 18
IR_VERSION = 9

Dim = int | str


class GraphBuilder:
    """Accumulates nodes, initializers, inputs and outputs of one ONNX graph.

    Every layer method takes the name of its input tensor(s) and returns the name of its
    output tensor, so models read like their PyTorch ``forward``::

        b = GraphBuilder("tiny", seed=0)
        x = b.input("input", TensorProto.FLOAT, ["batch", 3, 32, 32])
        y = b.relu(b.bn(b.conv(x, 3, 16, 3, pad=1, prefix="conv1"), 16, prefix="bn1"))
        b.output(y, "output", TensorProto.FLOAT, ["batch", 16, 32, 32])
        model = b.model()

    Args:
        name: the graph's name.
        seed: seed of the `numpy.random.Generator` that draws every weight.
    """

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._used: set[str] = set()
        self._scalars: dict[tuple[str, float | int], str] = {}
        #: Calibration values by tensor name (initializers included), see `input`.
        self.values: dict[str, np.ndarray] = {}
        self._calib_rng = np.random.default_rng(seed + 1_000_003)

    # -- names, tensors and raw nodes ---------------------------------------------------------
    def unique(self, name: str) -> str:
        """Return `name`, or `name` with a ``_1``, ``_2``... suffix if it is already taken."""
        candidate, i = name, 0
        while candidate in self._used:
            i += 1
            candidate = f"{name}_{i}"
        self._used.add(candidate)
        return candidate

    def input(
        self,
        name: str,
        elem_type: int,
        shape: Sequence[Dim],
        calibration_shape: Sequence[int] | None = None,
    ) -> str:
        """Declare a graph input and return its name.

        Args:
            name: the input's name.
            elem_type: its ``TensorProto`` element type.
            shape: its shape; strings are symbolic dims.
            calibration_shape: when given (float inputs only), a standard-normal batch of
                this shape is traced through the layers added afterwards, and every `bn`
                takes its running statistics from it.
        """
        name = self.unique(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        if calibration_shape is not None:
            data = self._calib_rng.standard_normal(tuple(calibration_shape))
            self.values[name] = data.astype(np.float32)
        return name

    def output(self, tensor: str, name: str, elem_type: int, shape: Sequence[Dim] | None) -> str:
        """Expose `tensor` as the graph output `name`.

        The tensor is renamed where it is produced and used (exporters name the last node's
        output after the graph output); a graph input or initializer goes through an Identity.
        """
        if tensor != name:
            name = self.unique(name)
            producers = [n for n in self.nodes if tensor in n.output]
            if producers:
                for n in self.nodes:
                    for seq in (n.input, n.output):
                        for i, t in enumerate(seq):
                            if t == tensor:
                                seq[i] = name
                if tensor in self.values:
                    self.values[name] = self.values.pop(tensor)
            else:
                self.nodes.append(
                    helper.make_node("Identity", [tensor], [name], name=f"/{name}/Identity")
                )
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def const(self, array: np.ndarray, name: str) -> str:
        """Add an initializer holding `array` (its dtype kept) and return its name."""
        name = self.unique(name)
        array = np.ascontiguousarray(array)
        self.initializers.append(numpy_helper.from_array(array, name))
        self.values[name] = array
        return name

    def scalar(self, value: float | int, dtype: str = "float32") -> str:
        """A shared 0-d initializer (exporters emit one per distinct constant)."""
        key = (dtype, value)
        if key not in self._scalars:
            tag = str(value).replace("-", "neg").replace(".", "_")
            self._scalars[key] = self.const(np.array(value, dtype=dtype), f"const_{dtype}_{tag}")
        return self._scalars[key]

    def ints(self, values: Sequence[int], name: str = "const_shape") -> str:
        """A 1-d int64 initializer, as used for shapes, axes and indices."""
        return self.const(np.array(values, dtype=np.int64), name)

    def node(
        self,
        op: str,
        inputs: Sequence[str],
        prefix: str,
        n_outputs: int = 1,
        **attrs: object,
    ) -> str:
        """Add a node ``/<prefix>/<op>``; return its first output's name.

        Extra outputs (``n_outputs > 1``) are named ``<first>_1``, ``<first>_2``...
        """
        base = self.unique(f"/{prefix}/{op}_output_0")
        outputs = [base] + [self.unique(f"{base}_{i}") for i in range(1, n_outputs)]
        self.nodes.append(
            helper.make_node(
                op, list(inputs), outputs, name=self.unique(f"/{prefix}/{op}"), **attrs
            )
        )
        kernel = _TRACE.get(op)
        if kernel is not None and all(i in self.values for i in inputs):
            self.values[base] = kernel([self.values[i] for i in inputs], attrs)
        return base

    # -- convolutional layers -----------------------------------------------------------------
    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        pad: int = 0,
        group: int = 1,
        bias: bool = False,
        prefix: str = "conv",
    ) -> str:
        """A 2-d convolution with a He-initialised ``[cout, cin/group, k, k]`` weight."""
        fan_in = cin // group * k * k
        w = self.normal(math.sqrt(2.0 / fan_in), (cout, cin // group, k, k))
        inputs = [x, self.const(w, f"{prefix}.weight")]
        if bias:
            inputs.append(self.const(self._small(cout), f"{prefix}.bias"))
        return self.node(
            "Conv",
            inputs,
            prefix,
            dilations=[1, 1],
            group=group,
            kernel_shape=[k, k],
            pads=[pad] * 4,
            strides=[stride, stride],
        )

    def bn(self, x: str, c: int, gamma: float = 1.0, prefix: str = "bn") -> str:
        """BatchNormalization (inference) with plausible running statistics.

        Args:
            x: input tensor name.
            c: number of channels.
            gamma: typical size of the learned scale; residual branches use less than 1 so
                that deep residual sums stay O(1).
            prefix: name prefix.
        """
        scale = gamma * self.rng.uniform(0.5, 1.5, c)
        bias = self.rng.normal(0.0, 0.1, c)
        mean = self.rng.normal(0.0, 0.1, c)
        var = self.rng.uniform(0.5, 1.5, c)
        if x in self.values:  # calibrated: the statistics a training run would have learned
            axes = (0, *range(2, self.values[x].ndim))
            mean = self.values[x].astype(np.float64).mean(axis=axes)
            var = self.values[x].astype(np.float64).var(axis=axes) + 1e-3
        names = [
            self.const(a.astype(np.float32), f"{prefix}.{n}")
            for a, n in ((scale, "weight"), (bias, "bias"), (mean, "running_mean"),
                         (var, "running_var"))
        ]  # fmt: skip
        return self.node("BatchNormalization", [x, *names], prefix, epsilon=1e-5, momentum=0.9)

    def maxpool(self, x: str, k: int, stride: int, pad: int = 0, prefix: str = "pool") -> str:
        """MaxPool with a square kernel."""
        return self.node(
            "MaxPool",
            [x],
            prefix,
            ceil_mode=0,
            dilations=[1, 1],
            kernel_shape=[k, k],
            pads=[pad] * 4,
            strides=[stride, stride],
        )

    def global_avgpool(self, x: str, prefix: str = "avgpool") -> str:
        """GlobalAveragePool (what ``AdaptiveAvgPool2d((1, 1))`` exports to)."""
        return self.node("GlobalAveragePool", [x], prefix)

    def flatten(self, x: str, axis: int = 1, prefix: str = "flatten") -> str:
        """Flatten to 2-d at `axis`."""
        return self.node("Flatten", [x], prefix, axis=axis)

    # -- element-wise -------------------------------------------------------------------------
    def relu(self, x: str, prefix: str = "relu") -> str:
        """Relu."""
        return self.node("Relu", [x], prefix)

    def relu6(self, x: str, prefix: str = "relu6") -> str:
        """ReLU6 as exporters write it: ``Clip(x, 0, 6)`` with min/max as inputs."""
        return self.node("Clip", [x, self.scalar(0.0), self.scalar(6.0)], prefix)

    def add(self, a: str, b: str, prefix: str = "add") -> str:
        """Element-wise Add."""
        return self.node("Add", [a, b], prefix)

    def gelu(self, x: str, prefix: str = "gelu") -> str:
        """Exact GELU as PyTorch exports it before opset 20: ``x * 0.5 * (1 + erf(x / √2))``.

        Five nodes: Div, Erf, Add, Mul, Mul.
        """
        t = self.node("Div", [x, self.scalar(1.4142135381698608)], prefix)
        t = self.node("Erf", [t], prefix)
        t = self.node("Add", [t, self.scalar(1.0)], prefix)
        t = self.node("Mul", [x, t], prefix)
        return self.node("Mul", [t, self.scalar(0.5)], prefix)

    # -- dense layers -------------------------------------------------------------------------
    def matmul(self, x: str, k: int, n: int, std: float | None = None, prefix: str = "fc") -> str:
        """MatMul by a ``[k, n]`` weight (``std`` defaults to He's ``sqrt(2 / k)``)."""
        std = math.sqrt(2.0 / k) if std is None else std
        w = self.normal(std, (k, n))
        return self.node("MatMul", [x, self.const(w, f"{prefix}.weight")], prefix)

    def linear(self, x: str, k: int, n: int, std: float | None = None, prefix: str = "fc") -> str:
        """``nn.Linear`` on an N-d input as exported: MatMul by ``W^T`` then Add bias."""
        y = self.matmul(x, k, n, std, prefix)
        bias = self.const(self._small(n), f"{prefix}.bias")
        return self.node("Add", [y, bias], prefix)

    def gemm(self, x: str, k: int, n: int, prefix: str = "fc") -> str:
        """``nn.Linear`` on a 2-d input as exported: Gemm with a ``[n, k]`` weight, transB=1."""
        w = self.normal(math.sqrt(1.0 / k), (n, k))
        inputs = [
            x,
            self.const(w, f"{prefix}.weight"),
            self.const(self._small(n), f"{prefix}.bias"),
        ]
        return self.node("Gemm", inputs, prefix, alpha=1.0, beta=1.0, transB=1)

    def layernorm(self, x: str, n: int, eps: float = 1e-12, prefix: str = "LayerNorm") -> str:
        """LayerNormalization over the last axis (opset 17+ exports it as one op)."""
        scale = self.const((1.0 + self.rng.normal(0.0, 0.05, n)).astype(np.float32),
                           f"{prefix}.weight")  # fmt: skip
        bias = self.const(self._small(n), f"{prefix}.bias")
        return self.node("LayerNormalization", [x, scale, bias], prefix, axis=-1, epsilon=eps)

    # -- the model ----------------------------------------------------------------------------
    def model(self, doc: str = "") -> onnx.ModelProto:
        """The finished model: opset `OPSET`, IR version `IR_VERSION`.

        Args:
            doc: the model's doc string.
        """
        graph = helper.make_graph(
            self.nodes, self.name, self.inputs, self.outputs, initializer=self.initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="lepton-benchmarks",
            producer_version="1",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        return model

    def normal(self, std: float, shape: Sequence[int]) -> np.ndarray:
        """Draw a float32 ``N(0, std²)`` array (float32 directly: BERT-base has 110 M weights)."""
        w = self.rng.standard_normal(tuple(shape), dtype=np.float32)
        w *= np.float32(std)
        return w

    def _small(self, n: int) -> np.ndarray:
        return self.normal(0.02, (n,))


# -- numpy kernels for calibration tracing (float32 in, float32 out) ---------------------------
def _conv(xs: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    x, w = xs[0], xs[1]
    (sh, sw), (k1, k2), g = a["strides"], a["kernel_shape"], a["group"]
    p = a["pads"]
    x = np.pad(x, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])))
    win = sliding_window_view(x, (k1, k2), axis=(2, 3))[:, :, ::sh, ::sw]  # n c oh ow k k
    n, c, oh, ow = win.shape[:4]
    o = w.shape[0]
    if g == 1:
        y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    else:
        win = win.reshape(n, g, c // g, oh, ow, k1, k2)
        y = np.einsum("ngchwij,gocij->ngohw", win, w.reshape(g, o // g, c // g, k1, k2))
        y = y.reshape(n, o, oh, ow)
    if len(xs) > 2:
        y = y + xs[2].reshape(1, -1, 1, 1)
    return np.ascontiguousarray(y, dtype=np.float32)


def _batchnorm(xs: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    x, scale, bias, mean, var = xs
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = scale / np.sqrt(var + a["epsilon"])
    return (x * inv.reshape(shape) + (bias - mean * inv).reshape(shape)).astype(np.float32)


def _maxpool(xs: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    (sh, sw), (k1, k2), p = a["strides"], a["kernel_shape"], a["pads"]
    x = np.pad(xs[0], ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])), constant_values=-np.inf)
    return sliding_window_view(x, (k1, k2), axis=(2, 3))[:, :, ::sh, ::sw].max(axis=(4, 5))


def _gemm(xs: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    w = xs[1].T if a.get("transB") else xs[1]
    return (xs[0] @ w + (xs[2] if len(xs) > 2 else 0)).astype(np.float32)


_TRACE: dict[str, Callable[[list[np.ndarray], dict[str, Any]], np.ndarray]] = {
    "Conv": _conv,
    "BatchNormalization": _batchnorm,
    "MaxPool": _maxpool,
    "Gemm": _gemm,
    "Relu": lambda xs, a: np.maximum(xs[0], 0),
    "Clip": lambda xs, a: np.clip(xs[0], xs[1], xs[2]),
    "Add": lambda xs, a: xs[0] + xs[1],
    "MatMul": lambda xs, a: xs[0] @ xs[1],
    "GlobalAveragePool": lambda xs, a: xs[0].mean(axis=(2, 3), keepdims=True),
    "Flatten": lambda xs, a: xs[0].reshape(int(np.prod(xs[0].shape[: a["axis"]])), -1),
}


def batch_dim(batch: int | str) -> Dim:
    """Validate a batch argument: a positive int or a symbolic dim name."""
    if isinstance(batch, str):
        if not batch.isidentifier():
            raise ValueError(f"a symbolic batch must be an identifier, got {batch!r}")
        return batch
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int or a dim name, got {batch!r}")
    return batch


def count_parameters(model: onnx.ModelProto) -> int:
    """Number of scalar values held in the model's initializers."""
    return sum(math.prod(t.dims) for t in model.graph.initializer)


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
