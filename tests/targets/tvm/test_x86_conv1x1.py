"""TVM x86 channel-vector conv form (`schedules.x86_conv1x1`): pointwise and small-spatial
convs vectorized over output channels with pre-packed weights match the reference
interpreter with every epilogue, odd channel counts, batch 2, strides, padding; the form is
chosen by shape."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

from lepton_compiler.targets.tvm.build import build_group
from lepton_compiler.targets.tvm.kernels import conv
from lepton_compiler.targets.tvm.schedules.x86_conv1x1 import CvecConfig, choose_cvec_config
from lepton_compiler.targets.tvm.te_ops import (
    ConvWorkload,
    cvec_weight_shape,
    pack_cvec_weights,
)

from .test_x86_conv import TARGET, _check, _fused, conv_text

CASES = {
    # 1x1 on small outputs, M not a multiple of 16, odd C.
    "1x1_7x7_odd_channels": conv_text(13, 21, (7, 7), (1, 1), bias="input"),
    "1x1_14x14_bias_clip": conv_text(24, 40, (14, 14), (1, 1), bias="input", act="clip"),
    "1x1_add_bias_relu_residual_batch2": conv_text(
        17, 48, (7, 7), (1, 1), n=2, bias="add", act="relu", residual=True,
        relu_after_residual=True,
    ),
    "1x1_residual_no_bias": conv_text(32, 16, (14, 14), (1, 1), residual=True),
    "1x1_sigmoid": conv_text(9, 35, (5, 6), (1, 1), bias="input", act="Sigmoid"),
    "1x1_hardswish_batch2": conv_text(20, 33, (7, 7), (1, 1), n=2, bias="input",
                                      act="HardSwish"),
    # Strides (the input is only broadcast: any stride works), padding, dilation.
    "1x1_s2_from_28": conv_text(16, 40, (28, 28), (1, 1), strides=(2, 2), bias="input",
                                act="relu"),
    "1x1_s2_odd_input": conv_text(7, 19, (15, 13), (1, 1), strides=(2, 2), bias="input"),
    "3x3_p1_7x7_residual": conv_text(24, 32, (7, 7), (3, 3), pads=(1, 1, 1, 1), bias="input",
                                     act="relu", residual=True, relu_after_residual=True),
    "3x3_s2_p1_from_14_batch2": conv_text(16, 20, (14, 14), (3, 3), strides=(2, 2),
                                          pads=(1, 1, 1, 1), n=2, bias="input", act="clip"),
    "3x3_asym_pads_dilation": conv_text(5, 18, (9, 11), (3, 2), pads=(2, 0, 1, 1),
                                        dilations=(2, 1), bias="add", act="relu"),
    "5x5_stride_3": conv_text(4, 8, (17, 14), (5, 5), strides=(3, 3), pads=(2, 2, 2, 2),
                              bias="add", act="relu"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_channel_vector_conv_matches_reference(name: str) -> None:
    """Each case runs in the channel-vector form (chosen by shape) and matches."""
    _, _, fused = _fused(CASES[name])
    kernel = build_group(fused, TARGET)
    assert isinstance(kernel.config, CvecConfig), kernel.config
    _check(CASES[name])


def test_weights_are_packed_by_output_channel_blocks() -> None:
    """The kernel declares the weights ``[Mpad / nb, C, KH, KW, nb]`` and packs them from
    OIHW (the executor does it once at compile time)."""
    _, _, fused = _fused(CASES["1x1_14x14_bias_clip"])
    kernel = build_group(fused, TARGET)
    cfg = kernel.config
    assert isinstance(cfg, CvecConfig)
    pos = next(iter(kernel.packs))
    blocks = -(-40 // cfg.nb)
    assert kernel.param_shapes[pos] == (blocks, 24, 1, 1, cfg.nb)
    assert kernel.param_shapes[0] == (1, 24, 14, 14)  # the input stays NCHW


def test_pack_cvec_weights_layout() -> None:
    wl = ConvWorkload(1, 3, 5, 5, 20, 3, 2, (1, 1), (0, 0, 0, 0), (1, 1), False)
    w = np.random.default_rng(0).standard_normal((20, 3, 3, 2)).astype(np.float32)
    p = pack_cvec_weights(w, wl, 16)
    assert p.shape == cvec_weight_shape(wl, 16) == (2, 3, 3, 2, 16)
    for m in range(20):
        np.testing.assert_array_equal(p[m // 16, :, :, :, m % 16], w[m])
    assert not p[1, :, :, :, 4:].any()  # padded channels are zero


def test_tiles_divide_the_output() -> None:
    """Tiles cover the output without tails, fit the registers, and use whole blocks of
    positions; no tile of >= 4 positions divides a 17x17 output."""
    for hw, m, c in (((7, 7), 160, 960), ((14, 14), 64, 384), ((28, 28), 512, 256)):
        wl = ConvWorkload(1, c, *hw, m, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), False)
        cfg = choose_cvec_config(wl, 16)
        assert cfg is not None
        assert hw[0] % cfg.hb == 0 and hw[1] % cfg.wb == 0
        assert cfg.positions * cfg.mv <= 24 and cfg.positions >= 4
    prime = ConvWorkload(1, 8, 17, 17, 16, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), False)
    assert choose_cvec_config(prime, 16) is None


def test_form_is_chosen_by_shape() -> None:
    """Channel-vector form for 14x14 and smaller outputs and for strided convs; stride-1
    convs on larger outputs and the 3-channel stem keep the position-vector forms."""

    def form(text: str) -> bool:
        _, _, fused = _fused(text)
        return isinstance(build_group(fused, TARGET).config, CvecConfig)

    assert form(conv_text(32, 64, (14, 14), (1, 1)))
    assert form(conv_text(32, 64, (56, 56), (1, 1), strides=(2, 2)))
    assert not form(conv_text(32, 64, (28, 28), (1, 1)))
    assert not form(conv_text(16, 16, (20, 20), (3, 3), pads=(1, 1, 1, 1)))
    assert not form(conv_text(3, 16, (64, 64), (7, 7), strides=(2, 2), pads=(3, 3, 3, 3)))


def test_no_tile_falls_back_to_the_other_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 17x17 output has no tile: the position-vector forms run it, correctly."""
    monkeypatch.setattr(conv, "FORCE_CVEC", True)
    text = conv_text(8, 16, (17, 17), (3, 3), pads=(1, 1, 1, 1), bias="input", act="relu")
    _, _, fused = _fused(text)
    assert not isinstance(build_group(fused, TARGET).config, CvecConfig)
    _check(text)
