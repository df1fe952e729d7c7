"""Whole-network sparse inference: pack once, then pass active units from layer to layer.

``SparseEngine.from_layers(specs)`` packs every layer once into the layout its
kernel reads: a layer fed a dense input (the first, or one after a layer
without kWTA) gets a row layout and the sparse-dense kernel; a layer fed the
winners of a kWTA layer gets a column layout and the sparse-sparse kernel,
fused with its own kWTA when it has one. 16x1 block structure is detected per
layer. Both come from the kernel modules' one public ``prepare``. ``forward`` then
runs one numba call per layer (kernel and kWTA fused), with settings and
intermediate buffers fixed per batch size on the first call of that size.

``DenseEngine`` runs the same specs with torch (``F.linear`` and a topk-scatter
kWTA): the reference for correctness and the baseline for speed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sparsecli.kernels import kwinners, sparse_dense, sparse_sparse
from sparsecli.kernels.formats import STRUCTURES, DenseRows, as_weight


@dataclass(frozen=True, eq=False)
class LayerSpec:
    """One linear layer: ``y = x @ weight.T + bias``, then k-winners-take-all if ``k`` is set.

    ``weight`` is float32 ``[out, in]`` with zeros where masked. ``k=None`` means no
    activation at all (the classifier head); with ``k`` the ``k`` largest outputs per
    row keep their values, negative ones included, and the rest become zero.
    """

    weight: np.ndarray
    bias: np.ndarray | None = None
    k: int | None = None

    def __post_init__(self) -> None:
        w = as_weight(self.weight)
        object.__setattr__(self, "weight", w)
        if self.bias is not None:
            b = np.ascontiguousarray(np.asarray(self.bias, dtype=np.float32))
            if b.shape != (w.shape[0],):
                raise ValueError(f"bias must have shape ({w.shape[0]},) to match weight {w.shape}, got {b.shape}")
            object.__setattr__(self, "bias", b)
        if self.k is not None:
            object.__setattr__(self, "k", kwinners.check_k(self.k, w.shape[0]))

    @property
    def n_out(self) -> int:
        return self.weight.shape[0]

    @property
    def n_in(self) -> int:
        return self.weight.shape[1]

    @property
    def density(self) -> float:
        """Fraction of non-zero weights."""
        return float(np.count_nonzero(self.weight)) / self.weight.size


def check_layers(layers: Sequence[LayerSpec]) -> list[LayerSpec]:
    """Validate a network: at least one layer, each a ``LayerSpec``, shapes chaining."""
    layers = list(layers)
    if not layers:
        raise ValueError("a network needs at least one layer")
    for i, spec in enumerate(layers):
        if not isinstance(spec, LayerSpec):
            raise ValueError(f"layer {i} must be a LayerSpec, got {type(spec).__name__}")
        if i and spec.n_in != layers[i - 1].n_out:
            raise ValueError(f"layer {i} takes {spec.n_in} inputs but layer {i - 1} gives {layers[i - 1].n_out}")
    return layers


class _Densify:
    """Scatter a kWTA layer's winners back into dense rows (a buffer kept per batch size)."""

    def __init__(self, n_out: int):
        self.n_out = n_out
        self._out: dict[int, np.ndarray] = {}

    def buffer(self, batch: int) -> np.ndarray:
        out = self._out.get(batch)
        if out is None:
            out = self._out[batch] = np.empty((batch, self.n_out), np.float32)
        return out

    def __call__(self, idx, val):
        out = self.buffer(idx.shape[0])
        kwinners._scatter_rows(idx, val, out)
        return out


ACTIVATIONS = ("sparse", "dense")


class BoundCalls(NamedTuple):
    """An engine's layers bound to fixed buffers for one batch size (``SparseEngine._program``)."""

    x_in: np.ndarray  # the first layer's input: ``forward`` copies into it
    steps: list  # per layer, its calls (the kernel, then a densify if any): zero-argument partials
    result: object  # where the last call writes: winners ``(idx, val)`` or (padded) rows


class SparseEngine:
    """A network packed for sparse inference; ``engine(x)`` returns the last layer's output.

    Build it with ``from_layers``. Not safe to call from several threads at once
    (numba's workqueue threading layer is not).
    """

    def __init__(
        self,
        prepared: list,
        layers: list[LayerSpec],
        activations: str = "sparse",
        input_k: int | None = None,
    ):
        self.input_k = input_k
        self.prepared = prepared  # per layer: DenseInputLayer or SparseInputLayer, and a _Densify or None
        self.activations = activations
        self.packed = [p.packed for p, _ in prepared]
        self.layers = layers
        self.n_in = layers[0].n_in
        self.n_out = layers[-1].n_out
        self._programs: dict[int, BoundCalls | None] = {}

    @classmethod
    def from_layers(
        cls,
        layers: Sequence[LayerSpec],
        structure: str = "auto",
        parallel: bool | None = None,
        activations: str = "sparse",
        input_k: int | None = None,
        precision: str = "fp32",
    ) -> SparseEngine:
        """Pack ``layers`` once.

        Args:
            layers: the network, first layer first.
            structure: ``auto`` (detect per layer), or force ``blocks16``, ``unstructured``, ``dense``.
            parallel: use numba's threads (True/False); default: only where a call has enough work.
            activations: ``sparse`` passes kWTA winners on as indices and values (sparse-sparse);
                ``dense`` scatters them back into dense rows, so only weight sparsity is used
                (sparse-dense; the point of comparison that isolates activation sparsity).
            input_k: the input is itself sparse, ``input_k`` active units per row, passed to
                ``forward_active`` as indices and values (e.g. to time one hidden layer alone).
            precision: ``fp32``, ``bf16`` or ``int8`` weights in the sparse layouts (``precision.py``).
        """
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
        if activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
        layers = check_layers(layers)
        if input_k is not None:
            input_k = kwinners.check_k(input_k, layers[0].n_in)
        prepared = []
        active = input_k  # winners per row feeding the current layer; None: a dense input
        for spec in layers:
            if active is None:
                layer = sparse_dense.prepare(spec.weight, spec.bias, spec.k, structure, parallel, precision)
            else:
                layer = sparse_sparse.prepare(spec.weight, spec.bias, spec.k, structure, parallel, active, precision)
            densify = activations == "dense" and spec.k is not None and spec is not layers[-1]
            prepared.append((layer, _Densify(spec.n_out) if densify else None))
            active = spec.k if activations == "sparse" else None
        return cls(prepared, layers, activations, input_k)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """float32 ``[batch, in]`` -> float32 ``[batch, out]``; a last layer with kWTA comes out dense."""
        if self.input_k is not None:
            raise ValueError("this engine takes a sparse input: call forward_active(indices, values)")
        x = sparse_dense.check_input(x, self.n_in)
        program = self._program(x.shape[0])
        if program is None:
            return self._run(x, x.shape[0])
        np.copyto(program.x_in, x)
        for calls in program.steps:
            for call in calls:
                call()
        return self._output(program.result, x.shape[0])

    def _program(self, batch: int) -> BoundCalls | None:
        """Per batch size: every layer's kernel call (and its densify) bound once to fixed
        buffers; None where a layer has no such call (a dense layout runs in torch) or a padded
        result would feed a dense-input layer. At batch 1 binding saves most of the
        microseconds each layer spent in Python around its call."""
        if batch in self._programs:
            return self._programs[batch]
        x_in = np.zeros((batch, self.n_in), np.float32)
        steps, h, program = [], x_in, None
        last = len(self.prepared) - 1
        for i, (layer, densify) in enumerate(self.prepared):
            call = layer.kernel_call(*h, reuse=True) if isinstance(h, tuple) else layer.kernel_call(h, reuse=True)
            if call is None:
                break
            kernel, args, h = call
            steps.append([functools.partial(kernel, *args)])
            if densify is not None:
                out = densify.buffer(batch)
                steps[-1].append(functools.partial(kwinners._scatter_rows, *h, out))
                h = out
            elif not isinstance(h, tuple) and h.shape != (batch, layer.n_out) and i < last:
                break
        else:
            program = BoundCalls(x_in, steps, h)
        self._programs[batch] = program
        return program

    def _output(self, h, batch: int) -> np.ndarray:
        """The last layer's result in a fresh array: dense rows, without padding."""
        out = np.empty((batch, self.n_out), np.float32)
        if isinstance(h, tuple):
            kwinners._scatter_rows(*h, out)
        else:
            out[...] = h[:batch, : self.n_out]
        return out

    def forward_active(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """Like ``forward`` for an engine built with ``input_k``: the input's active units as
        ``[batch, input_k]`` indices and float32 values (e.g. from ``k_winners``)."""
        if self.input_k is None:
            raise ValueError("this engine takes a dense input: call forward(x)")
        idx, val = sparse_sparse.check_active(idx, val, self.n_in)
        if idx.shape[1] != self.input_k:
            raise ValueError(f"expected {self.input_k} active units per row, got {idx.shape[1]}")
        return self._run((idx, val), idx.shape[0])

    def _run(self, h, batch: int) -> np.ndarray:
        last = len(self.prepared) - 1
        for i, (layer, densify) in enumerate(self.prepared):
            reuse = i < last  # intermediate results live in the layers' buffers; the last is fresh
            if isinstance(h, tuple):
                h = layer(*h, reuse=reuse, checked=True)
            else:
                h = layer(h, reuse=reuse)
            if densify is not None:
                h = densify(*h)
        return self._output(h, batch) if isinstance(h, tuple) else h

    __call__ = forward

    def describe(self) -> list[dict]:
        """Per layer: shape, weight density, k, the layout chosen, and its kernel."""
        rows = []
        dense_input = self.input_k is None
        for spec, p in zip(self.layers, self.packed):
            dense_input = dense_input or self.activations == "dense"
            rows.append(
                {
                    "shape": (spec.n_out, spec.n_in),
                    "density": spec.density,
                    "k": spec.k,
                    "format": type(p).__name__,
                    "kernel": ("sparse-dense" if dense_input else "sparse-sparse")
                    if not isinstance(p, DenseRows)
                    else "dense",
                }
            )
            dense_input = spec.k is None
        return rows


class DenseEngine:
    """The same network in torch: ``F.linear`` per layer, kWTA by ``topk`` + scatter.

    ``engine(x)`` takes and returns numpy (or torch, if given torch). ``lowest_ties``: kWTA
    ties go to the lowest indices, as in the kernels (``kwinners.kwta_dense_torch``): the
    reference outputs are checked against, not the timed baseline.
    """

    def __init__(self, layers: Sequence[LayerSpec], lowest_ties: bool = False):
        import torch

        self.lowest_ties = lowest_ties
        self.layers = check_layers(layers)
        self._params = [
            (
                torch.from_numpy(s.weight),
                None if s.bias is None else torch.from_numpy(s.bias),
                s.k,
            )
            for s in self.layers
        ]
        self._steps = self._layer_steps()

    @classmethod
    def from_layers(cls, layers: Sequence[LayerSpec], lowest_ties: bool = False) -> DenseEngine:
        return cls(layers, lowest_ties)

    def steps(self) -> list:
        """Each layer as a function of its torch input (what ``forward`` runs, one by one)."""
        return self._steps

    def _layer_steps(self) -> list:
        import torch.nn.functional as F

        def layer(h, w, b, k):
            h = F.linear(h, w, b)
            return kwinners.kwta_dense_torch(h, k, self.lowest_ties) if k is not None else h

        return [lambda h, p=p: layer(h, *p) for p in self._params]

    def forward(self, x):
        import torch

        as_numpy = not isinstance(x, torch.Tensor)
        h = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if as_numpy else x
        with torch.inference_mode():
            for step in self._steps:
                h = step(h)
        return h.numpy() if as_numpy else h

    __call__ = forward


def _conv_kwta_torch(x, k: int, local: bool, lowest_ties: bool = False):
    """kWTA on NCHW ``x``: global over C*H*W, or across channels at each position. With
    ``lowest_ties``, ties go to the lowest index in the kernels' channels-last order."""
    if not local and not lowest_ties:
        return kwinners.kwta_dense_torch(x.flatten(1), k).view_as(x)
    last = x.permute(0, 2, 3, 1)
    if not local:
        flat = kwinners.kwta_dense_torch(last.flatten(1), k, True)
        return flat.view(last.shape).permute(0, 3, 1, 2)
    return kwinners.kwta_dense_torch(last, k, lowest_ties).permute(0, 3, 1, 2)


class SparseCNNEngine:
    """A CNN packed for sparse inference: conv blocks (``conv.ConvSpec``), flatten, linear layers.

    Maps stay channels-last between conv blocks; a conv fed a kWTA layer's winners runs the
    sparse-input (scatter) kernel, the first conv and any conv after a ReLU the dense-input
    one. The first linear layer's columns are permuted from torch's CHW flattening to HWC
    at pack time, so ``flatten`` costs nothing. ``engine(x)`` takes float32
    ``[batch, C*H*W]`` (or ``[batch, C, H, W]``) in torch's layout.
    """

    def __init__(self, input_shape, convs, conv_layers, tail: SparseEngine, densify, activations: str):
        self.input_shape = tuple(input_shape)
        self.convs = convs
        self.conv_layers = conv_layers
        self.tail = tail
        self._densify = densify
        self.activations = activations
        self.n_in = int(np.prod(self.input_shape))
        self.n_out = tail.n_out

    @classmethod
    def from_specs(cls, input_shape, convs, linears: Sequence[LayerSpec], structure: str = "auto",
                   parallel: bool | None = None, activations: str = "sparse",
                   precision: str = "fp32") -> SparseCNNEngine:
        from sparsecli.kernels import conv as conv_mod

        if activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
        if not convs:
            raise ValueError("a CNN needs at least one conv block (use SparseEngine for an MLP)")
        shape = tuple(int(s) for s in input_shape)
        layers, densify = [], []
        sparse = False
        for i, spec in enumerate(convs):
            layer = conv_mod.prepare(spec, shape, sparse_input=sparse, chw_input=i == 0, structure=structure,
                                     parallel=parallel, precision=precision)
            shape = layer.out_shape
            sparse = spec.k is not None
            n = int(np.prod(shape))
            if sparse and activations == "dense":
                densify.append(_Densify(n))
                sparse = False
            else:
                densify.append(None)
            layers.append(layer)
        linears = check_layers(linears)
        n_flat = int(np.prod(shape))
        if linears[0].n_in != n_flat:
            raise ValueError(f"the first linear layer takes {linears[0].n_in} inputs but the conv blocks give {n_flat}")
        perm = conv_mod.hwc_to_chw_columns(*shape)
        first = LayerSpec(np.ascontiguousarray(linears[0].weight[:, perm]), linears[0].bias, linears[0].k)
        tail_layers = [first, *linears[1:]]
        width = None
        if sparse:  # winners per row the first linear layer gets (at most the map's size)
            spec = convs[-1]
            positions = (shape[1] * shape[2]) if spec.pool_first or spec.pool == 1 else \
                layers[-1].conv_hw[0] * layers[-1].conv_hw[1]
            width = min(n_flat, layers[-1].k * (positions if spec.local else 1))
        tail = SparseEngine.from_layers(tail_layers, structure, parallel, activations, input_k=width,
                                        precision=precision)
        return cls(input_shape, list(convs), layers, tail, densify, activations)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        x = np.ascontiguousarray(x.reshape(x.shape[0], -1))
        if x.shape[1] != self.n_in:
            raise ValueError(f"x must be [batch, {self.n_in}] (or [batch, *{self.input_shape}]), got {x.shape}")
        if x.shape[0] <= self.CHUNK:
            return self._run(x)
        # Large batches go through in chunks of rows: a whole batch's conv maps (64 x 12544 floats
        # for the GSC network's first block) would stream through memory between ops, while a
        # chunk's stay in cache from one op to the next.
        out = np.empty((x.shape[0], self.n_out), np.float32)
        for i in range(0, x.shape[0], self.CHUNK):
            out[i : i + self.CHUNK] = self._run(x[i : i + self.CHUNK])
        return out

    CHUNK = 8  # rows per pass through the network

    def _run(self, x: np.ndarray) -> np.ndarray:
        h = x
        for layer, densify in zip(self.conv_layers, self._densify):
            h = layer(h, reuse=True)
            if densify is not None:
                h = densify(*h)
        return self.tail._run(h, x.shape[0])

    __call__ = forward

    def describe(self) -> list[dict]:
        rows = []
        for spec, layer in zip(self.convs, self.conv_layers):
            rows.append({"shape": tuple(spec.weight.shape), "density": spec.density, "k": spec.k,
                         "format": "DenseColumns" if layer.sparse_input else type(layer.packed).__name__,
                         "kernel": "sparse-sparse" if layer.sparse_input else "sparse-dense"})
        return rows + self.tail.describe()


class DenseCNNEngine:
    """The same CNN in torch (NCHW): ``F.conv2d``, ``F.max_pool2d``, topk-scatter kWTA, ``F.linear``
    (``lowest_ties`` as for ``DenseEngine``)."""

    def __init__(self, input_shape, convs, linears: Sequence[LayerSpec], lowest_ties: bool = False):
        import torch

        self.input_shape = tuple(input_shape)
        self.lowest_ties = lowest_ties
        self.convs = [(torch.from_numpy(s.weight), torch.from_numpy(s.bias), s) for s in convs]
        self.tail = DenseEngine(linears, lowest_ties)
        self._steps = self._layer_steps()

    @classmethod
    def from_specs(cls, input_shape, convs, linears, lowest_ties: bool = False) -> DenseCNNEngine:
        return cls(input_shape, convs, linears, lowest_ties)

    def steps(self) -> list:
        """Each conv block, then each linear layer (the first flattens), as a function of its
        torch input (NCHW from the reshaped input on): what ``forward`` runs, one by one."""
        return self._steps

    def _layer_steps(self) -> list:
        import torch
        import torch.nn.functional as F

        def block(h, w, b, s):
            h = F.conv2d(h, w, b, stride=s.stride, padding=s.padding)
            if s.pool_first and s.pool > 1:
                h = F.max_pool2d(h, s.pool)
            if s.k is not None:
                h = _conv_kwta_torch(h, s.k, s.local, self.lowest_ties)
            elif s.relu:
                h = torch.relu(h)
            if not s.pool_first and s.pool > 1:
                h = F.max_pool2d(h, s.pool)
            return h

        first, *rest = self.tail.steps()
        return [*(lambda h, c=c: block(h, *c) for c in self.convs), lambda h: first(h.flatten(1)), *rest]

    def forward(self, x):
        import torch

        as_numpy = not isinstance(x, torch.Tensor)
        h = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if as_numpy else x
        h = h.reshape(h.shape[0], *self.input_shape)
        with torch.inference_mode():
            for step in self._steps:
                h = step(h)
        return h.numpy() if as_numpy else h

    __call__ = forward
