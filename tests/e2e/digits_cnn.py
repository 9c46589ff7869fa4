"""A small CNN trained on scikit-learn's bundled 8x8 digits, in numpy, exported as ONNX.

Conv(1→8, 3x3, pad 1) → ReLU → Conv(8→16, 3x3, stride 2, pad 1) → ReLU → Flatten → Gemm(256→10).
Trained with Adam on a fixed split (seeded, so every run trains the same model) in a few
seconds; about 97-98 % test accuracy. The int8 accuracy tests quantize it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: images ``[N, 1, 8, 8]`` in [0, 1], 75/25 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    n = int(len(x) * 0.75)
    return x[:n], y[:n], x[n:], y[n:]


def _cols(x: np.ndarray, stride: int) -> np.ndarray:
    """im2col for 3x3 kernels with padding 1: ``[N, C*9, OH*OW]``."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    taps = [
        xp[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
        for i in range(3)
        for j in range(3)
    ]
    return np.stack(taps, axis=2).reshape(n, c * 9, oh * ow)


def _uncols(d: np.ndarray, shape: tuple[int, ...], stride: int) -> np.ndarray:
    """The adjoint of `_cols`."""
    n, c, h, w = shape
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    d = d.reshape(n, c, 9, oh, ow)
    out = np.zeros((n, c, h + 2, w + 2), np.float32)
    for t in range(9):
        i, j = divmod(t, 3)
        out[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride] += d[:, :, t]
    return out[:, :, 1:-1, 1:-1]


def _forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, dict]:
    c1 = _cols(x, 1)
    h1 = np.maximum(np.einsum("mk,nkp->nmp", p["w1"].reshape(8, -1), c1) + p["b1"][:, None], 0)
    h1 = h1.reshape(-1, 8, 8, 8)
    c2 = _cols(h1, 2)
    h2 = np.maximum(np.einsum("mk,nkp->nmp", p["w2"].reshape(16, -1), c2) + p["b2"][:, None], 0)
    f = h2.reshape(len(x), -1)
    logits = f @ p["w3"].T + p["b3"]
    return logits, {"c1": c1, "h1": h1, "c2": c2, "h2": h2, "f": f}


def train(epochs: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    """Train the CNN; returns its parameters (ONNX layouts)."""
    x, y, _, _ = load_digits_split()
    rng = np.random.default_rng(seed)
    p = {
        "w1": (rng.standard_normal((8, 1, 3, 3)) * np.sqrt(2 / 9)).astype(np.float32),
        "b1": np.zeros(8, np.float32),
        "w2": (rng.standard_normal((16, 8, 3, 3)) * np.sqrt(2 / 72)).astype(np.float32),
        "b2": np.zeros(16, np.float32),
        "w3": (rng.standard_normal((10, 256)) * np.sqrt(1 / 256)).astype(np.float32),
        "b3": np.zeros(10, np.float32),
    }
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    step, lr = 0, 3e-3
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for s in range(0, len(x), 64):
            idx = order[s : s + 64]
            xb, yb = x[idx], y[idx]
            logits, a = _forward(p, xb)
            prob = np.exp(logits - logits.max(1, keepdims=True))
            prob /= prob.sum(1, keepdims=True)
            prob[np.arange(len(yb)), yb] -= 1
            dl = prob / len(yb)
            g = {"w3": dl.T @ a["f"], "b3": dl.sum(0)}
            dh2 = (dl @ p["w3"]).reshape(a["h2"].shape) * (a["h2"] > 0)
            g["w2"] = np.einsum("nmp,nkp->mk", dh2, a["c2"]).reshape(p["w2"].shape)
            g["b2"] = dh2.sum((0, 2))
            dc2 = np.einsum("mk,nmp->nkp", p["w2"].reshape(16, -1), dh2)
            dh1 = _uncols(dc2, a["h1"].shape, 2).reshape(len(xb), 8, 64) * (
                a["h1"].reshape(len(xb), 8, 64) > 0
            )
            g["w1"] = np.einsum("nmp,nkp->mk", dh1, a["c1"]).reshape(p["w1"].shape)
            g["b1"] = dh1.sum((0, 2))
            step += 1
            for k in p:
                m[k] = 0.9 * m[k] + 0.1 * g[k]
                v2[k] = 0.999 * v2[k] + 0.001 * g[k] ** 2
                mh, vh = m[k] / (1 - 0.9**step), v2[k] / (1 - 0.999**step)
                p[k] = (p[k] - lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
    return p


def to_onnx(p: dict[str, np.ndarray], batch: int | str = "N") -> onnx.ModelProto:
    """The trained CNN as an ONNX model (input ``image`` ``[batch, 1, 8, 8]``, output
    ``logits`` ``[batch, 10]``)."""
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node(
            "Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"
        ),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1, name="fc"),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in p.items()]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float((np.argmax(logits, axis=1) == labels).mean() * 100.0)
