"""The in-run microbenchmark behind ``sparsecli.targets.cost_kernels``, and the layer descriptions it reads.

``calibrate(batches)`` times the engines' own pieces on synthetic layers (seed 0), each
interleaved with the others, median of the samples, at every batch size asked for:

    torch_call_s, dense_call_s   torch F.linear on 8x8; DenseEngine of that layer minus it
    dense_points                 s per MAC of F.linear on a 256x256 weight (256 KiB, cache) and a
                                 2048x2048 one (16 MiB, beyond the private caches)
    topk_call_s, topk_s_per_unit torch topk + scatter on 64 and 2048 units
    kernel_call_s, engine_call_s one sparse-dense call on a 32x32 layer; the engine around it
    call_s, s_per_mac[kernel]    each kernel at two sizes, the line through them: sparse-dense
                                 blocks16 / CSR on 256x256 and 1024x1024 at 10% density (dense
                                 input), sparse-sparse blocks16 / CSC / dense columns with 10% of
                                 inputs active; conv: dense input 16 -> 16 channels 3x3 on 8x8 and
                                 16x16, sparse input (10% active) 16 -> 64 channels (unstructured
                                 30%: the gather; 16x1 blocks 30%: the kept-block scatter);
                                 torch's conv2d on the first
    kwta_s_per_unit, scatter_s_per_unit, pool_s_per_unit   k_winners on 256 and 2048 units
                                 (k = 10%), scattering them back, max-pool 2 of 14x14x64 and 28x28x64

Coefficients are seconds; the whole run takes about a second per batch size.
"""

from __future__ import annotations

import numpy as np

from sparsecli.kernels import conv as conv_mod
from sparsecli.kernels import kwinners, sparse_dense, sparse_sparse
from sparsecli.kernels.engine import DenseEngine, LayerSpec, SparseCNNEngine, SparseEngine, _Densify
from sparsecli.kernels.formats import ColumnBlocks, ColumnCSC, DenseColumns, RowBlocks, RowCSR
from sparsecli.kernels.timing import interleaved_timings

_KERNEL = {RowBlocks: "sd-blocks", RowCSR: "sd-csr", ColumnBlocks: "ss-blocks", ColumnCSC: "ss-csc",
           DenseColumns: "ss-dense"}


def _kernel_of(layer) -> tuple[str, float]:
    """(kernel name, stored multiply-adds per row) of a prepared linear layer."""
    p = layer.packed
    if isinstance(layer, sparse_sparse.SparseInputLayer):
        return _KERNEL[type(p)], p.nnz_stored / p.n_in * (layer.active or p.n_in)
    name = _KERNEL.get(type(p), "torch")
    return name, float(p.nnz_stored)


def describe_network(net) -> list[dict]:
    """Each layer of a ``measure.Network`` as ``cost_kernels`` sees it, for both sparse modes."""
    sd = net.sparse("dense")
    ss = net.sparse("sparse")
    rows = []
    if net.convs:
        shape = net.input_shape
        for spec, l_sd, l_ss in zip(net.convs, sd.conv_layers, ss.conv_layers):
            ho, wo = l_ss.conv_hw
            taps = spec.weight.shape[2] * spec.weight.shape[3]
            conv_units = ho * wo * spec.c_out
            out = spec.out_shape(shape)
            kwta_units = int(np.prod(out)) if spec.pool_first else conv_units
            work_sd = l_sd.packed.nnz_stored * ho * wo
            if l_ss.sparse_input and l_ss._blocks is not None:
                active = shape[0] * shape[1] * shape[2] * _active_fraction(rows)
                work_ss, kernel_ss = active * conv_blocks_work(l_ss), "conv-sparse-blocks"
            elif l_ss.sparse_input:
                active = shape[0] * shape[1] * shape[2] * _active_fraction(rows)
                work_ss, kernel_ss = active * taps * spec.c_out, "conv-sparse"
            else:
                work_ss, kernel_ss = work_sd, "conv-dense"
            rows.append({"kind": "conv", "n_in": spec.weight[0].size, "n_out": spec.c_out, "k": spec.k,
                         "dense_macs": spec.dense_macs(shape), "conv_units": conv_units, "pool": spec.pool,
                         "units_out": int(np.prod(out)), "kwta_units": kwta_units,
                         "active_out": (spec.k * (out[1] * out[2] if spec.local else 1)) if spec.k else None,
                         "kernel_sd": "conv-dense", "work_sd": work_sd, "kernel_ss": kernel_ss, "work_ss": work_ss})
            shape = out
        tails = (sd.tail, ss.tail)
    else:
        tails = (sd, ss)
    n_lin = len(tails[1].prepared)
    for i in range(n_lin):
        (l_sd, _), (l_ss, _) = tails[0].prepared[i], tails[1].prepared[i]
        k_sd, w_sd = _kernel_of(l_sd)
        k_ss, w_ss = _kernel_of(l_ss)
        rows.append({"kind": "linear", "n_in": l_ss.n_in, "n_out": l_ss.n_out, "k": l_ss.k,
                     "units_out": l_ss.n_out, "kwta_units": l_ss.n_out, "active_out": l_ss.k,
                     "kernel_sd": k_sd, "work_sd": w_sd, "kernel_ss": k_ss, "work_ss": w_ss,
                     "last": i == n_lin - 1})
    return rows


def conv_blocks_work(layer) -> float:
    """Multiply-adds one active input costs the kept-block sparse-input conv (``ConvLayer.block_work_per_input``)."""
    return layer.block_work_per_input()


def _active_fraction(rows: list[dict]) -> float:
    last = rows[-1]
    return min(1.0, last["active_out"] / last["units_out"]) if last.get("active_out") else 1.0


def _rng_weight(rng, n_out, n_in, density, structure):
    from sparsecli.kernels.measure import mask

    m = mask(rng, n_out, n_in, density, structure)
    return (rng.standard_normal((n_out, n_in)) * m).astype(np.float32)


def _fit(t_small: float, t_large: float, w_small: float, w_large: float) -> tuple[float, float]:
    """(call seconds, seconds per unit of work) through two timings of the same kernel."""
    slope = max(t_large - t_small, 0.0) / (w_large - w_small)
    return max(t_small - slope * w_small, 0.0), slope


def calibrate(batches, repeats: int = 15) -> dict:
    """Coefficients for ``cost_kernels.predict_latency``, keyed by batch size (as a string).

    Each kernel is timed at two sizes; the line through them gives its per-call seconds
    (``call_s``) and its seconds per multiply-add (``s_per_mac``) or per unit.
    """
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    tiny = LayerSpec(rng.standard_normal((8, 8)).astype(np.float32))
    small_w = torch.from_numpy(rng.standard_normal((256, 256)).astype(np.float32))
    large_w = torch.from_numpy(rng.standard_normal((2048, 2048)).astype(np.float32))
    w32 = _rng_weight(rng, 32, 32, 0.25, "unstructured")
    sizes = (256, 1024)
    sd_layers, ss_layers = {}, {}
    for n in sizes:
        sd_layers[("sd-blocks", n)] = sparse_dense.prepare(_rng_weight(rng, n, n, 0.1, "blocks16"), structure="blocks16")
        sd_layers[("sd-csr", n)] = sparse_dense.prepare(_rng_weight(rng, n, n, 0.1, "unstructured"),
                                                        structure="unstructured")
        active = n // 10
        ss_layers[("ss-blocks", n)] = sparse_sparse.prepare(_rng_weight(rng, n, n, 0.1, "blocks16"), structure="blocks16",
                                                            active=active)
        ss_layers[("ss-csc", n)] = sparse_sparse.prepare(_rng_weight(rng, n, n, 0.1, "unstructured"),
                                                         structure="unstructured", active=active)
        ss_layers[("ss-dense", n)] = sparse_sparse.prepare(rng.standard_normal((16, n)).astype(np.float32),
                                                           structure="dense", active=active)
    cw = (rng.standard_normal((16, 16, 3, 3)) * (rng.random((16, 16, 3, 3)) < 0.5)).astype(np.float32)
    cspec = conv_mod.ConvSpec(cw, padding=1)
    # Sparse-input convs at 64 output channels, the width sparse CNNs use (the gather kernel's cost
    # per multiply-add falls with the channels it holds in registers): unstructured weights (the
    # dense-vector gather) and 16x1 blocks (the kept-block scatter).
    cw64 = (rng.standard_normal((64, 16, 3, 3)) * (rng.random((64, 16, 3, 3)) < 0.3)).astype(np.float32)
    keep = np.repeat(rng.random((4, 16, 3, 3)) < 0.3, 16, axis=0)
    cw64b = (rng.standard_normal((64, 16, 3, 3)) * keep).astype(np.float32)
    convs = {m: (conv_mod.prepare(cspec, (16, m, m)),
                 conv_mod.prepare(conv_mod.ConvSpec(cw64, padding=1), (16, m, m), sparse_input=True),
                 conv_mod.prepare(conv_mod.ConvSpec(cw64b, padding=1), (16, m, m), sparse_input=True))
             for m in (8, 16)}
    torch_cw = torch.from_numpy(cw)
    out = {}
    for batch in sorted(set(int(b) for b in batches)):
        def randn(*shape):
            return rng.standard_normal((batch, *shape)).astype(np.float32)

        x8, x256, x2048 = (torch.from_numpy(randn(n)) for n in (8, 256, 2048))
        xs = {n: randn(n) for n in sizes}
        acts = {n: kwinners.k_winners(xs[n], n // 10) for n in sizes}
        t64 = torch.from_numpy(randn(64))
        rows = {n: randn(n) for n in (256, 2048)}
        wins = {n: kwinners.k_winners(rows[n], n // 10) for n in (256, 2048)}
        scat = {n: np.empty((batch, n), np.float32) for n in (256, 2048)}
        maps = {m: randn(16 * m * m) for m in (8, 16)}
        maps_t = {m: torch.from_numpy(maps[m].reshape(batch, 16, m, m)) for m in (8, 16)}
        cacts = {m: kwinners.k_winners(maps[m], 16 * m * m // 10) for m in (8, 16)}
        pool_in = {m: randn(m * m * 64) for m in (14, 28)}
        pool_out = {m: np.empty((batch, (m // 2) ** 2 * 64), np.float32) for m in (14, 28)}
        dense_tiny = DenseEngine([tiny])
        sd32 = sparse_dense.prepare(w32, structure="unstructured")
        eng32 = SparseEngine.from_layers([LayerSpec(w32)], "unstructured")
        x32 = randn(32)

        def lin(x, w):
            def run():
                with torch.inference_mode():
                    return F.linear(x, w)
            return run

        fns = {
            "torch8": lin(x8, torch.from_numpy(tiny.weight)), "dense_engine8": lambda: dense_tiny(x8.numpy()),
            "torch256": lin(x256, small_w), "torch2048": lin(x2048, large_w),
            "topk64": lambda: kwinners.kwta_dense_torch(t64, 6),
            "topk2048": lambda: kwinners.kwta_dense_torch(x2048, 205),
            "sd32": lambda: sd32(x32, reuse=True), "engine32": lambda: eng32(x32),
        }
        for n in (256, 2048):
            fns[f"kwta{n}"] = lambda n=n: kwinners.k_winners(rows[n], n // 10)
            fns[f"scatter{n}"] = lambda n=n, d=_Densify(n): d(*wins[n])
        for m in (14, 28):
            fns[f"pool{m}"] = lambda m=m: conv_mod._max_pool(pool_in[m], m, m, 64, 2, pool_out[m])
        for m, (dense_in, sparse_in, blocks_in) in convs.items():
            fns[f"conv-dense{m}"] = lambda m=m, layer=dense_in: layer(maps[m], reuse=True)
            fns[f"conv-sparse{m}"] = lambda m=m, layer=sparse_in: layer(cacts[m], reuse=True)
            fns[f"conv-sparse-blocks{m}"] = lambda m=m, layer=blocks_in: layer(cacts[m], reuse=True)
            fns[f"conv-torch{m}"] = lambda m=m: F.conv2d(maps_t[m], torch_cw, padding=1)
        for (name, n), layer in sd_layers.items():
            fns[f"{name}{n}"] = lambda layer=layer, n=n: layer(xs[n], reuse=True)
        for (name, n), layer in ss_layers.items():
            fns[f"{name}{n}"] = lambda layer=layer, n=n: layer(*acts[n], reuse=True, checked=True)
        # Bursts of back-to-back calls as the benchmark times them (its INNER), and the probes
        # that sweep the caches (16 MiB weights, the larger sizes) in a group of their own, so
        # the small calls are timed warm, as they run inside a network.
        from sparsecli.kernels.measure import INNER

        inner = INNER.get(batch, max(1, 64 // batch))
        large = {k for k in fns if k in ("torch2048", "topk2048", "kwta2048", "scatter2048", "pool28")
                 or k.endswith(("1024", "16"))}
        t = {}
        with torch.inference_mode():
            for group in ({k: f for k, f in fns.items() if k not in large}, {k: f for k, f in fns.items() if k in large}):
                t |= {k: v.median_s for k, v in interleaved_timings(group, repeats=repeats, warmup=2, inner=inner).items()}
        call = t["torch8"]
        c = {
            "torch_call_s": call,
            "dense_call_s": max(0.0, t["dense_engine8"] - call),
            "dense_points": [[256 * 256 * 4, max(t["torch256"] - call, 1e-12) / (256 * 256 * batch)],
                             [2048 * 2048 * 4, max(t["torch2048"] - call, 1e-12) / (2048 * 2048 * batch)]],
            "engine_call_s": max(0.0, t["engine32"] - t["sd32"]),
            "call_s": {}, "s_per_mac": {},
        }
        c["topk_call_s"], c["topk_s_per_unit"] = _fit(t["topk64"], t["topk2048"], 64 * batch, 2048 * batch)
        _, c["kwta_s_per_unit"] = _fit(t["kwta256"], t["kwta2048"], 256 * batch, 2048 * batch)
        c["scatter_call_s"], c["scatter_s_per_unit"] = _fit(t["scatter256"], t["scatter2048"], 256 * batch,
                                                             2048 * batch)
        _, c["pool_s_per_unit"] = _fit(t["pool14"], t["pool28"], 14 * 14 * 64 * batch, 28 * 28 * 64 * batch)
        for name in ("sd-blocks", "sd-csr"):
            w = [sd_layers[(name, n)].packed.nnz_stored * batch for n in sizes]
            c["call_s"][name], c["s_per_mac"][name] = _fit(t[f"{name}{sizes[0]}"], t[f"{name}{sizes[1]}"], *w)
        for name in ("ss-blocks", "ss-csc", "ss-dense"):
            w = [ss_layers[(name, n)].packed.nnz_stored / n * (n // 10) * batch for n in sizes]
            c["call_s"][name], c["s_per_mac"][name] = _fit(t[f"{name}{sizes[0]}"], t[f"{name}{sizes[1]}"], *w)
        for kind in ("dense", "sparse", "sparse-blocks", "torch"):
            if kind == "dense":
                w = [convs[m][0].packed.nnz_stored * m * m * batch for m in (8, 16)]
            elif kind == "sparse":
                w = [(16 * m * m // 10) * 9 * 64 * batch for m in (8, 16)]
            elif kind == "sparse-blocks":
                w = [(16 * m * m // 10) * conv_blocks_work(convs[m][2]) * batch for m in (8, 16)]
            else:
                w = [m * m * cw[0].size * 16 * batch for m in (8, 16)]
            c["call_s"][f"conv-{kind}"], c["s_per_mac"][f"conv-{kind}"] = _fit(t[f"conv-{kind}8"], t[f"conv-{kind}16"], *w)
        c["kernel_call_s"] = c["call_s"]["sd-csr"]
        c["measured_s"] = t
        out[str(batch)] = c
    return out


def average(calibrations: list[dict]) -> dict:
    """Coefficient-wise mean of several calibrations (taken before and after a measurement,
    so a drift of the machine's load in between shows in neither end alone)."""
    def mean(values):
        first = values[0]
        if isinstance(first, dict):
            return {k: mean([v[k] for v in values]) for k in first}
        if isinstance(first, list):
            return [mean([v[i] for v in values]) for i in range(len(first))]
        return sum(values) / len(values)

    return {b: mean([c[b] for c in calibrations]) for b in calibrations[0]}
