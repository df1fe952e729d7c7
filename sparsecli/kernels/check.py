"""Checking a kernel's output against the dense result before any timing is trusted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RTOL = 1e-4
"""Default tolerance relative to the largest reference magnitude (float32 sums in another order)."""
ATOL = 1e-5
"""Default absolute floor of the tolerance, for outputs near zero."""


@dataclass(frozen=True)
class KernelCheck:
    """How far a kernel's output is from the dense reference, and whether that is acceptable."""

    max_abs_diff: float
    tolerance: float  # atol + rtol * max |reference|
    argmax_agreement: float  # fraction of rows whose argmax agrees (ties within tolerance count)
    ok: bool

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "MISMATCH"
        return (
            f"{verdict}: max |diff| {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}), "
            f"argmax agreement {self.argmax_agreement:.1%}"
        )


def _as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor, without importing torch
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def check_against_dense(out, reference, rtol: float = RTOL, atol: float = ATOL) -> KernelCheck:
    """Compare ``out`` with the dense ``reference`` (both ``[batch, n]``, numpy or torch).

    ``ok`` needs every entry within ``atol + rtol * max|reference|`` and every row's
    argmax to agree; a differing argmax counts as agreeing when the two entries tie
    within the tolerance in the reference. Callers must not report a speedup for a
    kernel whose check is not ``ok``.
    """
    out = _as_numpy(out)
    ref = _as_numpy(reference)
    if out.shape != ref.shape:
        raise ValueError(f"output shape {out.shape} differs from reference shape {ref.shape}")
    if rtol < 0 or atol < 0:
        raise ValueError(f"rtol and atol must be non-negative, got {rtol} and {atol}")
    if out.size == 0:
        return KernelCheck(0.0, atol, 1.0, True)
    tolerance = atol + rtol * float(np.abs(ref).max())
    finite = bool(np.isfinite(out).all())
    max_abs_diff = float(np.abs(out - ref).max()) if finite else float("inf")
    rows_out = out.reshape(-1, out.shape[-1])
    rows_ref = ref.reshape(-1, ref.shape[-1])
    picked = rows_ref[np.arange(rows_ref.shape[0]), rows_out.argmax(axis=1)]
    agree = picked >= rows_ref.max(axis=1) - tolerance
    argmax_agreement = float(agree.mean())
    ok = finite and max_abs_diff <= tolerance and bool(agree.all())
    return KernelCheck(max_abs_diff, tolerance, argmax_agreement, ok)
