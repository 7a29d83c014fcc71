"""Linear layers that multiply a few tokens' rows faster.

On these 2-core machines MKL's sgemm runs x @ W^T at ~60 GFLOPS when x has 2-64 rows (a
16-token suffix after a KV cube, a short prompt) against ~150 at hundreds of rows, and most of a
suffix's time is those multiplications. The same product taken the other way round, (W @ x^T)^T,
runs 10-25 % faster at those shapes (measured in scripts/bench_kv.py's step breakdown; the
result is the same product, and tests/test_small_gemm.py checks it against F.linear). Larger
inputs, batches and a single row (decode) keep F.linear.
"""

from __future__ import annotations

import types
from typing import Any

from memnet.model.runtime import torch

SMALL_ROWS = 64


def _forward(self: Any, x: Any) -> Any:
    if x.dim() == 3 and x.shape[0] == 1 and 1 < x.shape[1] <= SMALL_ROWS:
        out = (self.weight @ x[0].transpose(0, 1)).transpose(0, 1).unsqueeze(0)
        return out if self.bias is None else out + self.bias
    return torch.nn.functional.linear(x, self.weight, self.bias)


def install(model: Any) -> int:
    """Give every Linear inside the decoder layers the small-input path; returns how many."""
    count = 0
    for module in model.model.layers.modules():
        if type(module) is torch.nn.Linear:
            module.forward = types.MethodType(_forward, module)
            count += 1
    return count
