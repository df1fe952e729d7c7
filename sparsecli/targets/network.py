"""A torch-free description of a network, as the cost models need it.

The cost models see a network only as a list of `LayerShape`s, so they can be
tested on paper and fed from any framework (the converter from a trained model
lives elsewhere). Shared work formulas live here, written once:

- weight_count             = in_features * out_features
- nonzero_weights          = round(weight_count * weight_density)
- macs (dense)             = weight_count * output_positions
- macs (sparse-dense)      = nonzero_weights * output_positions
- macs (sparse-sparse)     = nonzero_weights * input_density * output_positions
  (expected value, assuming active inputs are spread evenly over weight columns;
  exact for k-winners-take-all, where the count of active units is fixed)
- a layer whose input_density is 1 runs its sparse-dense kernel in sparse-sparse
  mode: with every input active, an activation index only costs (`effective_mode`)
- sized density (FPGA)     = the per-sample share of active inputs at quantile q over the
  samples seen (default p99); stall_rate = share of samples above it
- touched_fraction(d, b)   = 1 - (1 - d) ** b: share of weight columns a batch of b
  independent inputs, each with a share d of active units, needs (a column is
  skipped only if it is inactive in every sample)
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from sparsecli.params import parse_structure

MODES: tuple[str, ...] = ("dense", "sparse-dense", "sparse-sparse")
"""Execution modes: nothing exploited; weight sparsity; weight and activation sparsity."""

PRECISION_BITS: dict[str, int] = {"int8": 8, "int16": 16, "fixed16": 16, "fp16": 16, "fp32": 32}


@dataclass(frozen=True)
class LayerShape:
    """One linear or conv layer, as a cost model sees it.

    For a conv layer, `in_features` is the fan-in of one output (C_in * kh * kw),
    `out_features` the output channels, `output_positions` H_out * W_out.
    `weight_density` and `input_density` are fractions of non-zeros (1.0 = dense);
    `input_density` is the share of this layer's inputs that are non-zero.
    `input_size` is the number of input activations per sample; it defaults to
    in_features * output_positions (the im2col view, exact for linear layers).
    """

    name: str
    in_features: int
    out_features: int
    kind: Literal["linear", "conv"] = "linear"
    weight_density: float = 1.0
    input_density: float = 1.0
    output_positions: int = 1
    input_size: int | None = None
    # The share of inputs active in a sample at a high quantile of samples (hardware_map.active_quantile,
    # default p99), and the share of samples above it: what an FPGA's sparse-sparse lanes are sized for
    # and how often a sample needs more cycles. None: sized for the mean (input_density).
    input_density_sized: float | None = None
    stall_rate: float | None = None
    # the mask's weights.structure (unstructured, RxC blocks, N:M): a target that lists it in its
    # `structures:` runs it in its own format (sparsecli.targets.structures), any other as unstructured
    structure: str = "unstructured"

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "conv"):
            raise ValueError(f"layer {self.name!r}: kind must be 'linear' or 'conv', got {self.kind!r}")
        try:
            parse_structure(self.structure)
        except ValueError as e:
            raise ValueError(f"layer {self.name!r}: structure {self.structure!r}: {e}") from None
        # NumPy/torch scalars are accepted and stored as plain Python numbers (JSON-serialisable)
        for field in ("in_features", "out_features", "output_positions", "input_size"):
            value = getattr(self, field)
            if field == "input_size" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"layer {self.name!r}: {field} must be a positive integer, got {value!r}")
            object.__setattr__(self, field, int(value))
        if self.kind == "linear" and self.output_positions != 1:
            raise ValueError(f"layer {self.name!r}: a linear layer has output_positions 1, got {self.output_positions}")
        for field in ("weight_density", "input_density", "input_density_sized"):
            value = getattr(self, field)
            if field == "input_density_sized" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value <= 1.0:
                raise ValueError(
                    f"layer {self.name!r}: {field} is the fraction of non-zeros and must be in (0, 1], got {value!r}"
                )
            object.__setattr__(self, field, float(value))
        if self.stall_rate is not None:
            if isinstance(self.stall_rate, bool) or not 0.0 <= self.stall_rate <= 1.0:
                raise ValueError(f"layer {self.name!r}: stall_rate must be in [0, 1], got {self.stall_rate!r}")
            object.__setattr__(self, "stall_rate", float(self.stall_rate))

    @property
    def weight_count(self) -> int:
        return self.in_features * self.out_features

    @property
    def nonzero_weights(self) -> int:
        return max(1, round(self.weight_count * self.weight_density))

    @property
    def inputs(self) -> int:
        """Input activations per sample."""
        return self.input_size if self.input_size is not None else self.in_features * self.output_positions

    @property
    def outputs(self) -> int:
        """Output activations per sample."""
        return self.out_features * self.output_positions

    def macs_per_position(self, mode: str) -> float:
        """Multiply-accumulates for one output position of one sample in `mode`."""
        mode = effective_mode(self, mode)
        if mode == "dense":
            return float(self.weight_count)
        if mode == "sparse-dense":
            return float(self.nonzero_weights)
        return self.nonzero_weights * self.input_density

    def macs(self, mode: str) -> float:
        """Multiply-accumulates per sample in `mode`."""
        return self.macs_per_position(mode) * self.output_positions


def effective_mode(layer: LayerShape, mode: str) -> str:
    """The kernel a layer runs in `mode`: sparse-sparse on a dense input is sparse-dense."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if mode == "sparse-sparse" and layer.input_density >= 1.0:
        return "sparse-dense"
    return mode


def touched_fraction(density: float, batch_size: int) -> float:
    """Share of weight columns a batch of `batch_size` inputs of `density` needs."""
    return 1.0 - (1.0 - density) ** batch_size


def as_network(layers: Iterable[LayerShape | Mapping]) -> list[LayerShape]:
    """Accept LayerShapes or plain dicts (e.g. read from JSON); reject an empty network."""
    network = [layer if isinstance(layer, LayerShape) else LayerShape(**layer) for layer in layers]
    if not network:
        raise ValueError("the network has no layers")
    names = [layer.name for layer in network]
    if len(set(names)) != len(names):
        raise ValueError(f"layer names must be unique, got {names}")
    return network


def network_to_dicts(network: Sequence[LayerShape]) -> list[dict]:
    """JSON-serialisable form of a network (inverse of `as_network`)."""
    return [asdict(layer) for layer in network]
