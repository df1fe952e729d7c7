"""The dense baseline: torch's ``F.linear``, the thing every speedup is measured against."""

from __future__ import annotations

import numpy as np


def dense_linear(x, weight, bias=None):
    """``x @ W.T + b`` with torch; numpy in, numpy out (zero-copy), or torch in, torch out."""
    import torch
    import torch.nn.functional as F

    if isinstance(x, torch.Tensor):
        w = weight if isinstance(weight, torch.Tensor) else torch.from_numpy(np.asarray(weight, np.float32))
        b = bias if bias is None or isinstance(bias, torch.Tensor) else torch.from_numpy(np.asarray(bias, np.float32))
        with torch.inference_mode():
            return F.linear(x, w, b)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    w = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
    b = None if bias is None else torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
    with torch.inference_mode():
        return F.linear(xt, w, b).numpy()
