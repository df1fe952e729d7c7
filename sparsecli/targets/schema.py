"""Typed schema of the hardware target files (`hardware/*.yaml`, see hardware/README.md).

A target file is data only; these models reject unknown keys, missing fields and
out-of-range numbers so that a typo never silently becomes a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from sparsecli.params import parse_structure
from sparsecli.targets.network import PRECISION_BITS

Precision = Literal["int8", "int16", "fixed16", "fp16", "fp32"]
Positive = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]
Count = Annotated[int, Field(ge=0)]
PositiveCount = Annotated[int, Field(gt=0)]

BRAM36_BITS = 36 * 1024
URAM_BITS = 288 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _TargetBase(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    # weights.structure values executed in their own format (sparsecli.targets.structures);
    # any other runs as unstructured
    structures: list[str] = Field(default=["unstructured"], min_length=1)
    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_structures(self):
        for i, structure in enumerate(self.structures):
            try:
                parse_structure(structure)
            except ValueError as e:
                raise ValueError(f"structures: {structure!r}: {e}") from None
            if structure in self.structures[:i]:
                raise ValueError(f"structures: {structure!r} is listed twice")
        return self

    @property
    def source(self) -> str | None:
        """The file this target was loaded from, for traceability."""
        return str(self._source) if self._source is not None else None


# --- CPU -----------------------------------------------------------------------------


class CpuCache(_Strict):
    l1d_kib: PositiveCount  # per core
    l2_kib: PositiveCount  # per core
    l3_mib: Positive  # shared, per socket


class CpuEfficiency(_Strict):
    """Fraction of peak compute that each kernel family reaches (0, 1]."""

    dense: Fraction
    sparse_dense: Fraction
    sparse_sparse: Fraction


CPU_CALIBRATABLE = (
    "processor",
    "cores",
    "clock_ghz",
    "simd_width_bits",
    "isa",
    "memory_bandwidth_gbps",
    "memory_efficiency",
    "layer_overhead_us",
    "efficiency.dense",
    "efficiency.sparse_dense",
    "efficiency.sparse_sparse",
)


class CpuTarget(_TargetBase):
    kind: Literal["cpu"]
    processor: str = Field(min_length=1)
    cores: PositiveCount
    clock_ghz: Positive
    simd_width_bits: Literal[128, 256, 512]
    fma_units: PositiveCount  # vector FMA units per core
    isa: list[str]
    precisions: list[Precision] = Field(min_length=1)  # first one is the default
    cache: CpuCache
    memory_bandwidth_gbps: Positive  # theoretical peak DRAM bandwidth, GB/s (1e9 bytes)
    memory_efficiency: Fraction  # share of that bandwidth a streaming kernel reaches
    tdp_w: Positive
    layer_overhead_us: Annotated[float, Field(ge=0)]  # fixed cost per layer call
    efficiency: CpuEfficiency
    calibrated: list[str] = []  # dotted field paths that `calibrate` replaces by measurement
    _measured: dict | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_calibrated(self) -> CpuTarget:
        unknown = [field for field in self.calibrated if field not in CPU_CALIBRATABLE]
        if unknown:
            raise ValueError(
                f"calibrated: cannot calibrate {', '.join(unknown)}; allowed: {', '.join(CPU_CALIBRATABLE)}"
            )
        return self

    @property
    def measured(self) -> dict | None:
        """Raw calibration measurements, set by `calibrate`; None if not calibrated."""
        return self._measured

    def lanes(self, precision: str) -> int:
        """SIMD lanes at `precision`: simd_width_bits / bits."""
        return self.simd_width_bits // PRECISION_BITS[precision]

    def peak_flops(self, precision: str) -> float:
        """cores * lanes * fma_units * 2 flops * clock."""
        return self.cores * self.lanes(precision) * self.fma_units * 2 * self.clock_ghz * 1e9


# --- FPGA ----------------------------------------------------------------------------


class FpgaResources(_Strict):
    lut: PositiveCount
    ff: PositiveCount
    dsp: PositiveCount
    bram36: Count
    uram: Count


class FpgaCaps(_Strict):
    """Utilisation the estimator allows itself per resource (routability margin)."""

    lut: Fraction
    ff: Fraction
    dsp: Fraction
    memory: Fraction  # of onchip_memory_bits


class FpgaPower(_Strict):
    static_w: Positive
    typical_w: Positive  # board power while running; used for energy
    max_w: Positive


class FpgaEstimator(_Strict):
    """Assumptions of the dataflow estimator, not datasheet figures."""

    lut_per_multiplier: dict[Precision, Count]  # accumulator + control per MAC lane
    ff_per_multiplier: dict[Precision, Count]
    lut_per_layer: Count  # layer control, I/O registers
    pipeline_overhead_cycles: Count  # adder tree depth + I/O registers, per layer latency
    sparse_sparse_lut_per_multiplier: Count  # input-select mux for active inputs
    sparse_sparse_index_cycles: Count  # per layer latency: decode of active-input indices


class FpgaTarget(_TargetBase):
    kind: Literal["fpga"]
    part: str = Field(min_length=1)
    family: str = Field(min_length=1)
    board: str = ""
    resources: FpgaResources
    # what the platform shell leaves to user logic (data-center cards); None: the whole device
    user_resources: FpgaResources | None = None
    user_resources_source: str = ""
    onchip_memory_bits: PositiveCount  # BRAM + URAM bits
    dsp_type: str = Field(min_length=1)
    macs_per_dsp: dict[Precision, Positive] = Field(min_length=1)  # first key is the default precision
    clock_mhz: Positive
    caps: FpgaCaps
    offchip_bandwidth_gbps: Annotated[float, Field(ge=0)]  # 0: no external memory
    power: FpgaPower
    estimator: FpgaEstimator

    @model_validator(mode="after")
    def _check_consistency(self) -> FpgaTarget:
        expected = self.resources.bram36 * BRAM36_BITS + self.resources.uram * URAM_BITS
        if self.onchip_memory_bits > expected:
            raise ValueError(
                f"onchip_memory_bits: {self.onchip_memory_bits} exceeds bram36 * 36864 + uram * 294912 = {expected}"
            )
        for table in ("lut_per_multiplier", "ff_per_multiplier"):
            missing = [p for p in self.macs_per_dsp if p not in getattr(self.estimator, table)]
            if missing:
                raise ValueError(f"estimator.{table}: add an entry for {', '.join(missing)} (listed in macs_per_dsp)")
        if self.user_resources is not None:
            for res in ("lut", "ff", "dsp", "bram36", "uram"):
                if getattr(self.user_resources, res) > getattr(self.resources, res):
                    raise ValueError(f"user_resources.{res}: more than the device's resources.{res}")
            if not self.user_resources_source:
                raise ValueError("user_resources_source: name the document the shell's figures come from")
        if not self.power.static_w <= self.power.typical_w <= self.power.max_w:
            raise ValueError("power: need static_w <= typical_w <= max_w")
        return self

    @property
    def precisions(self) -> list[str]:
        return list(self.macs_per_dsp)


Target = CpuTarget | FpgaTarget
TargetModel = Annotated[CpuTarget | FpgaTarget, Field(discriminator="kind")]
