"""The small-input Linear path (memnet/model/small_gemm.py) computes what F.linear computes."""

from __future__ import annotations

import pytest

from memnet.model import small_gemm
from memnet.model.runtime import torch


@pytest.mark.parametrize("rows", [1, 2, 16, 64, 65, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_same_as_f_linear(rows, bias):
    gen = torch.Generator().manual_seed(rows)
    layer = torch.nn.Linear(96, 40, bias=bias)
    x = torch.randn(1, rows, 96, generator=gen)
    expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
    holder = torch.nn.Sequential(layer)
    holder.model = type("M", (), {"layers": holder})()  # the shape install() walks: model.model.layers
    assert small_gemm.install(holder) == 1
    got = layer(x)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(layer(x.repeat(2, 1, 1)), expected.repeat(2, 1, 1), atol=1e-5, rtol=1e-5)  # batches


def test_installed_on_a_loaded_model_and_exact_through_it(tiny):
    linears = [m for m in tiny.model.model.layers.modules() if type(m) is torch.nn.Linear]
    assert linears and all("forward" in vars(m) for m in linears)
    ids = torch.tensor([list(range(20, 44))])
    with torch.inference_mode():
        small = tiny.model(input_ids=ids).logits
        for m in linears:
            del m.forward  # back to nn.Linear.forward
        plain = tiny.model(input_ids=ids).logits
        small_gemm.install(tiny.model)
    assert float((small - plain).abs().max()) < 1e-5
