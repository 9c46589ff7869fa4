"""A BERT encoder (Hugging Face ``BertModel``, default BERT-base size) built as ONNX.

The graph is laid out the way ``torch.onnx.export`` writes a Hugging Face ``BertModel`` at
opset 17+ (one ``LayerNormalization`` op, GELU in its exact erf form):

- embeddings: three ``Gather`` lookups (word, position, token type), two ``Add``,
  ``LayerNormalization``;
- the extended attention mask ``(1 - mask[:, None, None, :]) * -10000`` as
  Unsqueeze, Cast, Sub, Mul;
- per layer: Q/K/V ``MatMul`` + ``Add``; ``Reshape`` to ``[b, s, heads, d]`` and
  ``Transpose`` to ``[b, heads, s, d]`` (K straight to ``[b, heads, d, s]`` with perm
  ``[0, 2, 3, 1]``); ``MatMul`` QK^T, ``Div`` by √d, ``Add`` mask, ``Softmax``, ``MatMul`` V,
  ``Transpose`` back, ``Reshape`` to ``[b, s, hidden]``; output projection, residual ``Add`` +
  ``LayerNormalization``; FFN ``MatMul`` + ``Add``, GELU (Div, Erf, Add, Mul, Mul),
  ``MatMul`` + ``Add``, residual ``Add`` + ``LayerNormalization``.

It is the project's transformer benchmark (attention patterns, LayerNorm, GELU fusion).

Differences from the real model: random weights (``N(0, 0.02)`` as BERT initialises them),
no pooler (the output is ``last_hidden_state``), token types fixed at 0 (no
``token_type_ids`` input), and Reshape shapes written as constants with 0 for the copied
batch/sequence dims instead of the exporter's Shape/Gather/Concat chains (onnxsim folds
those into the same constants for static shapes).
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from ._builder import FLOAT, INT64, GraphBuilder, batch_dim

#: Positions BERT has embeddings for.
MAX_POSITIONS = 512


def bert_base(
    batch: int | str = 1,
    seq: int | str = 128,
    layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    ffn: int = 3072,
    vocab: int = 30522,
    init_std: float = 0.02,
    seed: int = 0,
) -> onnx.ModelProto:
    """Build a BERT encoder with random weights (BERT-base with the defaults).

    Args:
        batch: the batch size, or a symbolic dim name such as ``"batch"``.
        seq: the sequence length (at most 512), or a symbolic dim name; a symbolic length
            slices the position embeddings with Shape/Slice, as the exporter does.
        layers: number of encoder layers.
        hidden: hidden size; must be divisible by `heads`.
        heads: number of attention heads.
        ffn: intermediate (feed-forward) size.
        vocab: vocabulary size.
        init_std: standard deviation of every weight matrix and embedding (BERT's 0.02).
        seed: seed of the weight generator (the same seed gives the same model).

    Returns:
        A model with int64 inputs ``input_ids`` and ``attention_mask`` (``[batch, seq]``) and
        the float32 output ``last_hidden_state`` ``[batch, seq, hidden]``; BERT-base has
        about 109 M parameters (436 MB of float32).

    Raises:
        ValueError: `hidden` is not divisible by `heads`, or `seq` exceeds 512.
    """
    n = batch_dim(batch)
    s = batch_dim(seq)
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
    if isinstance(s, int) and s > MAX_POSITIONS:
        raise ValueError(f"seq ({s}) exceeds BERT's {MAX_POSITIONS} position embeddings")
    d = hidden // heads
    b = GraphBuilder("bert", seed=seed)
    ids = b.input("input_ids", INT64, [n, s])
    mask = b.input("attention_mask", INT64, [n, s])

    # Embeddings.
    word_table = b.const(b.normal(init_std, (vocab, hidden)), "embeddings.word_embeddings.weight")
    pos_table = b.const(b.normal(init_std, (MAX_POSITIONS, hidden)),
                        "embeddings.position_embeddings.weight")  # fmt: skip
    type_table = b.const(b.normal(init_std, (2, hidden)), "embeddings.token_type_embeddings.weight")
    if isinstance(s, int):
        position_ids = b.const(np.arange(s, dtype=np.int64)[None], "embeddings.position_ids")
        token_type_ids = b.const(np.zeros((1, s), np.int64), "embeddings.token_type_ids")
    else:
        length = b.node("Shape", [ids], "embeddings", start=1, end=2)
        starts, axes = b.ints([0], "const_starts"), b.ints([1], "const_axes")
        buffer = b.const(np.arange(MAX_POSITIONS, dtype=np.int64)[None], "embeddings.position_ids")
        position_ids = b.node("Slice", [buffer, starts, length, axes], "embeddings")
        zeros = b.const(np.zeros((1, MAX_POSITIONS), np.int64), "embeddings.token_type_ids")
        token_type_ids = b.node("Slice", [zeros, starts, length, axes], "embeddings")
    x = b.node("Gather", [word_table, ids], "embeddings/word_embeddings")
    t = b.node("Gather", [type_table, token_type_ids], "embeddings/token_type_embeddings")
    x = b.add(x, t, prefix="embeddings")
    p = b.node("Gather", [pos_table, position_ids], "embeddings/position_embeddings")
    x = b.add(x, p, prefix="embeddings")
    x = b.layernorm(x, hidden, prefix="embeddings.LayerNorm")

    # Extended attention mask: 0 where attended, -10000 where masked, shape [b, 1, 1, s].
    m = b.node("Unsqueeze", [mask, b.ints([1, 2], "const_unsqueeze_axes")], "extended_mask")
    m = b.node("Cast", [m], "extended_mask", to=FLOAT)
    m = b.node("Sub", [b.scalar(1.0), m], "extended_mask")
    m = b.node("Mul", [m, b.scalar(-10000.0)], "extended_mask")

    split_shape = b.ints([0, 0, heads, d], "const_split_heads_shape")
    merge_shape = b.ints([0, 0, hidden], "const_merge_heads_shape")
    for i in range(layers):
        pre = f"encoder.layer.{i}"
        att = f"{pre}.attention.self"
        heads_of = {}
        for name, perm in (("query", [0, 2, 1, 3]), ("key", [0, 2, 3, 1]), ("value", [0, 2, 1, 3])):
            y = b.linear(x, hidden, hidden, std=init_std, prefix=f"{att}.{name}")
            y = b.node("Reshape", [y, split_shape], f"{att}/{name}")
            heads_of[name] = b.node("Transpose", [y], f"{att}/{name}", perm=perm)
        scores = b.node("MatMul", [heads_of["query"], heads_of["key"]], att)
        scores = b.node("Div", [scores, b.scalar(float(math.sqrt(d)))], att)
        scores = b.node("Add", [scores, m], att)
        probs = b.node("Softmax", [scores], att, axis=-1)
        ctx = b.node("MatMul", [probs, heads_of["value"]], att)
        ctx = b.node("Transpose", [ctx], att, perm=[0, 2, 1, 3])
        ctx = b.node("Reshape", [ctx, merge_shape], att)
        y = b.linear(ctx, hidden, hidden, std=init_std, prefix=f"{pre}.attention.output.dense")
        y = b.add(y, x, prefix=f"{pre}.attention.output")
        x = b.layernorm(y, hidden, prefix=f"{pre}.attention.output.LayerNorm")

        y = b.linear(x, hidden, ffn, std=init_std, prefix=f"{pre}.intermediate.dense")
        y = b.gelu(y, prefix=f"{pre}.intermediate.intermediate_act_fn")
        y = b.linear(y, ffn, hidden, std=init_std, prefix=f"{pre}.output.dense")
        y = b.add(y, x, prefix=f"{pre}.output")
        x = b.layernorm(y, hidden, prefix=f"{pre}.output.LayerNorm")

    b.output(x, "last_hidden_state", FLOAT, [n, s, hidden])
    return b.model(
        doc=f"BERT encoder (Hugging Face BertModel layout), {layers} layers, hidden {hidden}, "
        f"{heads} heads, random weights"
    )


def bert_tiny(batch: int | str = 1, seq: int | str = 16, seed: int = 0) -> onnx.ModelProto:
    """A 2-layer BERT (hidden 64, 4 heads, FFN 128, vocabulary 100) for fast tests.

    Its weights are drawn with std 0.2 instead of 0.02, so that attention is peaked rather
    than nearly uniform and a wrong mask, axis or transpose changes the output visibly.

    Args:
        batch: the batch size or a symbolic dim name.
        seq: the sequence length or a symbolic dim name.
        seed: seed of the weight generator.

    Returns:
        The model, with the same inputs and output as `bert_base`.
    """
    return bert_base(
        batch=batch,
        seq=seq,
        layers=2,
        hidden=64,
        heads=4,
        ffn=128,
        vocab=100,
        init_std=0.2,
        seed=seed,
    )
