"""k-winners-take-all that emits the winners' indices and values directly.

``torch.topk`` plus a scatter costs more per row at batch 1 than a whole
sparse-sparse layer; the next sparse-sparse layer only needs the active
indices and values, never the dense row. This selects exactly ``k`` winners per
row from the float bits: a histogram of the top 11 bits (as order-preserving
integer keys) finds the bin of the k-th largest value, one pass emits
everything above that bin and collects the bin's few entries, and a partial
sort of those alone gives the exact threshold.

Ties at the threshold go to the lowest indices, so the result is deterministic;
``-0.0`` and ``0.0`` count as equal. Winners keep their original values,
negative ones included. Indices are not sorted: the winners above the
threshold's bin come first, then those from the bin, each group ascending.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from sparsecli.kernels.formats import index_dtype

_SIGN = np.uint32(0x80000000)
_U32_MAX = np.uint32(0xFFFFFFFF)
# The order key's top 11 bits (sign, exponent, 2 mantissa bits) make the histogram's bins.
_TOP_SHIFT = np.uint32(21)
HIST_SIZE = 2048


@njit(cache=True)
def select_row(row, n, k, idx_out, val_out, keys, cand, ckeys, hist):
    """Write the ``k`` largest of ``row[:n]`` into ``idx_out``/``val_out``.

    Scratch space: ``keys``, ``cand``, ``ckeys`` uint32, each at least ``n``;
    ``hist`` int32 of ``HIST_SIZE``. The passes over all ``n`` entries are
    branch-free (a mispredicted branch per entry would cost more than the
    arithmetic) and store as little as they can; only the few entries at or
    above the threshold's bin see branches. Unsigned loop indices spare numba's
    negative-index checks.
    """
    nu = np.uint64(n)
    bits = row.view(np.uint32)
    # Order-preserving keys: flip all bits of negatives, the sign bit of positives.
    kmin = _U32_MAX
    kmax = np.uint32(0)
    for t in range(nu):
        b = bits[t]
        if b == _SIGN:  # -0.0 ties with 0.0
            b = np.uint32(0)
        # numba widens uint32 arithmetic to 64 bits: cast back before comparing.
        key = np.uint32(b ^ ((np.uint32(0) - (b >> np.uint32(31))) | _SIGN))
        keys[t] = key
        kmin = min(kmin, key)
        kmax = max(kmax, key)
    # Histogram of the top bits: the bin d holding the k-th largest key.
    lo = kmin >> _TOP_SHIFT
    hi = kmax >> _TOP_SHIFT
    hist[lo : hi + 1] = 0
    for t in range(nu):
        hist[keys[t] >> _TOP_SHIFT] += 1
    above = 0
    d = np.uint64(hi)
    while above + hist[d] < k:
        above += hist[d]
        d -= np.uint64(1)
    # One pass keeps the entries in bin d or above (winners above d, candidates in d).
    n_kept = np.uint64(0)
    for t in range(nu):
        cand[n_kept] = t
        n_kept += np.uint64((keys[t] >> _TOP_SHIFT) >= d)
    n_win = 0
    n_cand = 0
    for t in range(n_kept):
        p = cand[t]
        if (keys[p] >> _TOP_SHIFT) > d:
            idx_out[n_win] = p
            n_win += 1
        else:
            cand[n_cand] = p  # n_cand <= t: overwrites only entries already read
            ckeys[n_cand] = keys[p]
            n_cand += 1
    need = k - above
    threshold, quota = _threshold(ckeys, n_cand, need)
    # Candidates above the threshold win; equal ones win in index order up to the quota.
    for t in range(n_cand):
        p = cand[t]
        key = keys[p]
        if key > threshold or (key == threshold and quota > 0):
            if key == threshold:
                quota -= 1
            idx_out[n_win] = p
            n_win += 1
    for t in range(k):
        val_out[t] = row[idx_out[t]]


# Up to this many candidates, ranking each against all others beats a partial sort.
_RANK_MAX = 96


@njit(cache=True)
def _threshold_radix(ckeys, m, need):
    """The ``need``-th largest of ``ckeys[:m]`` (keys sharing their top 11 bits): a histogram
    of the next 11 bits finds its sub-bin, then the sub-bin's few keys are ranked (a
    partial sort of hundreds of candidates costs more than the whole row's histogram)."""
    hist = np.zeros(HIST_SIZE, np.int32)
    mid = np.uint32(0x7FF)
    for t in range(m):
        hist[(ckeys[t] >> np.uint32(10)) & mid] += 1
    above = 0
    d = HIST_SIZE - 1
    while above + hist[d] < need:
        above += hist[d]
        d -= 1
    sub = np.empty(hist[d], np.uint32)
    n_sub = 0
    for t in range(m):
        if ((ckeys[t] >> np.uint32(10)) & mid) == d:
            sub[n_sub] = ckeys[t]
            n_sub += 1
    need_sub = need - above
    if n_sub <= _RANK_MAX:
        return _rank_threshold(sub, n_sub, need_sub)
    return np.partition(sub, n_sub - need_sub)[n_sub - need_sub]


@njit(cache=True)
def _rank_threshold(keys, m, need):
    """The ``need``-th largest of ``keys[:m]`` by counting (few keys): the smallest key with fewer
    than ``need`` keys above it."""
    threshold = _U32_MAX
    for i in range(m):
        key = keys[i]
        above = 0
        for j in range(m):
            above += keys[j] > key
        if above < need:
            threshold = min(threshold, key)
    return threshold


@njit(cache=True)
def _threshold(ckeys, m, need):
    """The ``need``-th largest of the keys ``ckeys[:m]``, and how many keys equal to it win."""
    if need == m:
        threshold = _U32_MAX
        for t in range(m):
            threshold = min(threshold, ckeys[t])
    elif m <= _RANK_MAX:
        threshold = _rank_threshold(ckeys, m, need)
    else:
        threshold = _threshold_radix(ckeys, m, need)
    quota = need
    for t in range(m):
        quota -= ckeys[t] > threshold
    return threshold, quota


@njit(cache=True)
def _scratch_nb(n):
    """Scratch arrays for ``select_row``, carved from one allocation (each costs ~0.5 us)."""
    buf = np.empty(HIST_SIZE + 3 * n, np.int32)
    hist = buf[:HIST_SIZE]
    rest = buf[HIST_SIZE:].view(np.uint32)
    return rest[:n], rest[n : 2 * n], rest[2 * n :], hist


def row_chunks(n_rows: int) -> int:
    """How many contiguous chunks of rows a parallel kernel splits a batch into: one per thread.

    Parallel loops run over chunks, not rows, so per-thread scratch space is
    allocated once per chunk rather than once per row.
    """
    return max(1, min(n_rows, numba.get_num_threads()))


@njit(cache=True)
def _k_winners_serial(x, n, k, idx_out, val_out):
    keys, cand, ckeys, hist = _scratch_nb(n)
    for b in range(x.shape[0]):
        select_row(x[b], n, k, idx_out[b], val_out[b], keys, cand, ckeys, hist)


@njit(cache=True, parallel=True)
def _k_winners_parallel(x, n, k, idx_out, val_out, n_chunks):
    size = (x.shape[0] + n_chunks - 1) // n_chunks
    for ch in prange(n_chunks):
        keys, cand, ckeys, hist = _scratch_nb(n)
        for b in range(ch * size, min(x.shape[0], (ch + 1) * size)):
            select_row(x[b], n, k, idx_out[b], val_out[b], keys, cand, ckeys, hist)


@njit(cache=True)
def _scatter_rows(idx, val, out):
    for r in range(idx.shape[0]):
        o = out[r]
        o[:] = 0.0
        for t in range(idx.shape[1]):
            if val[r, t] != 0.0:  # padding entries (index 0, value 0) must not overwrite unit 0
                o[idx[r, t]] = val[r, t]


def scatter_dense(idx: np.ndarray, val: np.ndarray, n: int) -> np.ndarray:
    """The dense float32 ``[batch, n]`` rows holding ``val`` at ``idx`` and zeros elsewhere."""
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.shape != np.shape(val):
        raise ValueError(f"indices and values must both be [batch, k], got {idx.shape} and {np.shape(val)}")
    if idx.size and int(idx.max()) >= n:
        raise ValueError(f"indices must lie in [0, {n})")
    out = np.empty((idx.shape[0], n), np.float32)
    _scatter_rows(np.ascontiguousarray(idx), np.ascontiguousarray(val, dtype=np.float32), out)
    return out


def check_k(k, n: int) -> int:
    """Validate ``k`` for rows of length ``n``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] for rows of {n} units, got {k}")
    return int(k)


def k_winners(x: np.ndarray, k: int, n: int | None = None, parallel: bool | None = None):
    """The ``k`` largest entries of each row of ``x[:, :n]``, as ``(indices, values)``.

    Args:
        x: float32 ``[batch, width]``, C-contiguous.
        k: winners per row, ``1 <= k <= n``.
        n: only the first ``n`` columns compete (for padded rows); default all.
        parallel: split rows over threads; default when batch > 1.

    Returns:
        ``indices`` ``[batch, k]`` (uint16 when ``n <= 65536``, else uint32), unsorted
        (see the module docstring), and ``values`` float32 ``[batch, k]``.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype != np.float32:
        raise ValueError(f"x must be float32 [batch, width], got {x.dtype} {x.shape}")
    x = np.ascontiguousarray(x)
    n = x.shape[1] if n is None else int(n)
    if not 1 <= n <= x.shape[1]:
        raise ValueError(f"n must be in [1, {x.shape[1]}], got {n}")
    k = check_k(k, n)
    idx = np.empty((x.shape[0], k), index_dtype(n))
    val = np.empty((x.shape[0], k), np.float32)
    if parallel is None:
        parallel = x.shape[0] > 1 and numba.get_num_threads() > 1
    if parallel:
        _k_winners_parallel(x, n, k, idx, val, row_chunks(x.shape[0]))
    else:
        _k_winners_serial(x, n, k, idx, val)
    return idx, val


def kwta_dense_torch(x, k: int, lowest_ties: bool = False):
    """Reference kWTA in torch: keep the ``k`` largest values per row, zero elsewhere.

    ``topk`` breaks ties at the threshold in no documented order, so where values tie (maps
    of equal pixels give equal conv outputs) its winners and ``k_winners``' may differ while
    both are right. ``lowest_ties=True`` applies ``k_winners``' rule (the lowest indices
    win), the reference the kernels are checked against; the timed baseline stays ``topk``
    plus a scatter.
    """
    import torch

    check_k(k, x.shape[-1])
    values, indices = torch.topk(x, k, dim=-1)
    if not lowest_ties:
        return torch.zeros_like(x).scatter_(-1, indices, values)
    threshold = values[..., -1:]
    above = x > threshold
    tied = x == threshold
    quota = k - above.sum(-1, keepdim=True)
    keep = above | (tied & (tied.cumsum(-1) <= quota))
    return torch.where(keep, x, torch.zeros_like(x))
