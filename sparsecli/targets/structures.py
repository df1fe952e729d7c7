"""Weight structures on hardware: which a target executes in their own format, and what that changes.

A target file may list ``structures:`` (hardware/README.md), the ``model.*.weights.structure``
values it runs in their own format: ``unstructured``, ``RxC`` blocks (e.g. ``16x1``: 16 output
rows of one input column) or ``N:M``. A layer whose structure the target does not list runs
there as unstructured (every structured mask is also an unstructured one). The cost models
ask ``executed`` which format a layer runs in and ``index_entries`` how many indices it stores:

    executed(layer, target)  = layer.structure if it is in target.structures, else unstructured
    index entries, row-major (CPU CSR / 16x1 row blocks): blocks RxC: nonzero / (R * C)
                                                           else:        nonzero
    index entries, column-major (sparse-sparse, FPGA):    blocks RxC: nonzero / R
                                                           else:        nonzero

``check_space`` keeps a tune search over ``weights.structure`` to what a target lists.
"""

from __future__ import annotations

from collections.abc import Sequence

from sparsecli.errors import ParamsError
from sparsecli.params import SearchDim, parse_structure

UNSTRUCTURED = "unstructured"


def executed(structure: str, target) -> str:
    """The structure ``target`` runs a layer of ``structure`` in: its own if listed, else unstructured."""
    return structure if structure in target.structures else UNSTRUCTURED


def block_shape(structure: str) -> tuple[int, int]:
    """(rows, cols) of a blocks structure; (1, 1) for unstructured and N:M."""
    kind, a, b = parse_structure(structure)
    return (a, b) if kind == "blocks" else (1, 1)


def index_entries(nonzero: float, structure: str, column_major: bool = False) -> float:
    """Indices a layer stores for ``nonzero`` weights in ``structure`` (one per block, or per block column)."""
    rows, cols = block_shape(structure)
    return nonzero / (rows if column_major else rows * cols)


def is_structure_key(key: str) -> bool:
    """A search-space key that names a layer's weight structure (model.layers.N / model.conv.N)."""
    parts = key.split(".")
    return len(parts) == 5 and parts[0] == "model" and parts[1] in ("layers", "conv") and parts[3:] == ["weights", "structure"]


def check_space(space: Sequence[SearchDim], target, where: str = "tune.space") -> None:
    """ParamsError unless every ``choice`` over a ``weights.structure`` key is among ``target.structures``.

    Call it for each target a tune objective names, before Ray starts (searching a structure
    the target runs as unstructured spends trials on a shape it cannot exploit).
    """
    for i, dim in enumerate(space):
        if not is_structure_key(dim.key):
            continue
        values = dim.values or []
        outside = [v for v in values if v not in target.structures]
        if dim.dist != "choice" or outside:
            shown = ", ".join(map(str, outside)) or dim.dist
            raise ParamsError(f"{where}.{i}.values = {values}: {target.name} executes the structures "
                              f"{', '.join(target.structures)} (structures: in its hardware file); "
                              f"drop {shown} or search another target")


def column_index_bits(layer, target) -> float:
    """Index bits per stored weight of a column-major sparse layout (FPGA sparse-sparse) on ``target``.

    Each stored weight names its output row: ceil(log2(out_features)) bits; in RxC blocks the
    target lists, R rows share one block-row index: ceil(log2(ceil(out_features / R))) / R.
    """
    import math

    rows, _ = block_shape(executed(layer.structure, target))
    return max(1, math.ceil(math.log2(math.ceil(layer.out_features / rows)))) / rows
