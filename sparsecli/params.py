"""The typed parameter model: one class per params.yaml section, loading and validation.

Every hyperparameter is read from here and nowhere else. A key is named everywhere by
its dotted path with list indices as plain numbers (``model.layers.0.kwta.percent_on``),
the syntax ``dvc exp run -S`` accepts, so the same string works in ``--set``, in tune
search spaces and in error messages.

Words: ``sparsity`` is the fraction of zeros, ``density`` the fraction of non-zeros.
"""

from __future__ import annotations

import copy
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from sparsecli.errors import ParamsError
from sparsecli.tune_metrics import ALL as TUNE_METRICS
from sparsecli.tune_metrics import CONSTRAINTS as TUNE_CONSTRAINTS
from sparsecli.tune_metrics import HARDWARE as TUNE_HARDWARE
from sparsecli.tune_metrics import HARDWARE_NAMES as TUNE_HARDWARE_NAMES
from sparsecli.tune_metrics import LATENCIES as TUNE_LATENCIES
from sparsecli.tune_metrics import NAMES as TUNE_METRIC_NAMES


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool):
    """A validator that rejects values outside an interval, stating the interval."""
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    text = f"{left}{'-inf' if lo is None else _fmt(lo)}, {'inf' if hi is None else _fmt(hi)}{right}"

    def check(value):
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        too_high = hi is not None and (value >= hi if hi_open else value > hi)
        if too_low or too_high:
            raise ValueError(f"must be in {text}")
        return value

    return AfterValidator(check)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


Fraction = Annotated[float, _interval(0, 1, True, True)]  # (0, 1)
Sparsity = Annotated[float, _interval(0, 1, False, True)]  # [0, 1): 1 would remove every weight
PositiveFloat = Annotated[float, _interval(0, None, True, True)]
NonNegFloat = Annotated[float, _interval(0, None, False, True)]
PositiveInt = Annotated[int, _interval(1, None, False, True)]
NonNegInt = Annotated[int, _interval(0, None, False, True)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- data


class SyntheticParams(Section):
    samples: Annotated[int, _interval(30, None, False, True)] = 2000
    features: Annotated[int, _interval(2, None, False, True)] = 64
    classes: Annotated[int, _interval(2, None, False, True)] = 10
    informative: PositiveInt = 32
    redundant: NonNegInt = 0  # random linear combinations of the informative features
    class_sep: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _check(self):
        if self.informative + self.redundant > self.features:
            raise _CrossFieldError(
                "informative", self.informative, f"informative + redundant must be <= features ({self.features})"
            )
        if self.classes > 2**self.informative:
            raise _CrossFieldError("classes", self.classes, f"must be <= 2**informative ({2 ** self.informative})")
        return self


class IdxChecksums(Section):
    """Expected SHA-256 of each fetched file (optional): a mismatch stops the data stage."""

    train_images: str | None = None
    train_labels: str | None = None
    test_images: str | None = None
    test_labels: str | None = None


class IdxParams(Section):
    """MNIST-format IDX files: read from ``data.path`` or fetched once from ``base_url``."""

    base_url: str | None = None  # e.g. file:///data/mnist/ or https://host/mnist/
    train_images: str = "train-images-idx3-ubyte.gz"
    train_labels: str = "train-labels-idx1-ubyte.gz"
    test_images: str = "t10k-images-idx3-ubyte.gz"
    test_labels: str = "t10k-labels-idx1-ubyte.gz"
    sha256: IdxChecksums = IdxChecksums()


# The ten keywords of Google Speech Commands (the paper's 10 classes; v2 adds more words).
SPEECH_KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


class SpeechParams(Section):
    """Speech Commands clips -> features: 16 kHz mono 16-bit WAV, padded/trimmed to 1 s.

    ``mfcc``: 32 MFCC x 32 frames (librosa, n_fft 1024, hop 512, 40 mel bands);
    ``logmel``: 32 log-mel bands x 32 frames (same STFT). Features [1, 32, 32] per clip.
    """

    features: Literal["mfcc", "logmel"] = "mfcc"
    max_per_word: PositiveInt | None = None  # clips read per word and split (null = all): a quicker run


class DataParams(Section):
    source: Literal["digits", "synthetic", "idx", "npz", "csv", "speech_commands"] = "digits"
    path: str | None = None  # idx, speech_commands: a directory; npz/csv: a file
    raw_dir: str = "data/raw"  # where idx files fetched from base_url are kept
    label_column: str = "label"  # csv only
    max_samples: PositiveInt | None = None  # stratified subsample before splitting
    val_fraction: Fraction = 0.15
    test_fraction: Fraction = 0.2
    standardize: bool = True
    # feature: each feature to mean 0, std 1; global: one mean and std over all features (the
    # paper's MNIST normalisation); both fitted on the training split
    standardize_scope: Literal["feature", "global"] = "feature"
    # images: resize to image_size x image_size (bilinear) before splitting, e.g. the 8x8 digits
    # to MNIST's 28x28; null keeps the source's size
    image_size: Annotated[int, _interval(2, None, False, True)] | None = None
    words: list[str] = SPEECH_KEYWORDS  # speech_commands: the word folders that are classes
    speech: SpeechParams = SpeechParams()
    synthetic: SyntheticParams = SyntheticParams()
    idx: IdxParams = IdxParams()

    @field_validator("words", mode="before")
    @classmethod
    def _words(cls, value):
        if isinstance(value, list) and any(isinstance(w, bool) for w in value):
            raise ValueError('quote the words: YAML reads yes, no, on and off unquoted as true/false ("yes", "no", ...)')
        return value

    @model_validator(mode="after")
    def _check(self):
        if self.val_fraction + self.test_fraction >= 0.9:
            raise _CrossFieldError(
                "test_fraction", self.test_fraction, "val_fraction + test_fraction must be < 0.9"
            )
        if self.source in ("npz", "csv") and not self.path:
            raise _CrossFieldError("path", None, f"required for source {self.source}: set it to the file to read")
        if self.source == "idx" and not self.path and not self.idx.base_url:
            raise _CrossFieldError("path", None, "source idx needs data.path (a directory) or data.idx.base_url")
        if self.source == "speech_commands":
            if not self.path:
                raise _CrossFieldError("path", None, "source speech_commands needs data.path: the folder of word folders")
            if len(self.words) < 2 or len(set(self.words)) != len(self.words):
                raise _CrossFieldError("words", self.words, "list at least 2 different word folders")
        return self


# ---------------------------------------------------------------- model


# A static mask's structure (sparsecli.sparse.patterns spells these as Pattern.name): unstructured,
# ROWSxCOLS blocks (rows = output units, cols = inputs, e.g. 16x1: the CPU kernels' blocks), or N:M.
STRUCTURE = re.compile(r"^(?:unstructured|([1-9][0-9]*)x([1-9][0-9]*)|([1-9][0-9]*):([1-9][0-9]*))$")
STRUCTURE_HELP = "must be unstructured, ROWSxCOLS blocks (e.g. 16x1) or N:M (e.g. 2:4)"


def parse_structure(text: str) -> tuple[str, int, int]:
    """("unstructured", 1, 1), ("blocks", rows, cols) or ("nm", n, m); ValueError if malformed."""
    match = STRUCTURE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(STRUCTURE_HELP)
    if match[1]:
        rows, cols = int(match[1]), int(match[2])
        if (rows, cols) == (1, 1):
            raise ValueError("1x1 blocks are single weights: write unstructured")
        return "blocks", rows, cols
    if match[3]:
        n, m = int(match[3]), int(match[4])
        if n >= m:
            raise ValueError(f"N:M needs N < M (got {text})")
        return "nm", n, m
    return "unstructured", 1, 1


class WeightsParams(Section):
    """A layer's static mask: ``sparsity`` zeros per output unit, drawn in ``structure`` at init.

    ``unstructured``: each unit keeps round((1 - sparsity) * fan_in) random inputs. ``RxC``
    blocks: every R-unit block row keeps round((1 - sparsity) * fan_in / C) whole R x C
    blocks (the blocks must tile the layer). ``N:M``: every M consecutive inputs of a unit
    keep N (sparsity must be 1 - N/M). The mask is re-applied after every optimiser step.
    """

    sparsity: Sparsity = 0.0  # fraction of zero weights per output unit (0 = dense)
    structure: str = "unstructured"  # unstructured | ROWSxCOLS blocks (16x1) | N:M (2:4)

    @model_validator(mode="after")
    def _check(self):
        try:
            kind, n, m = parse_structure(self.structure)
        except ValueError as e:
            raise _CrossFieldError("structure", self.structure, str(e)) from None
        if kind == "nm" and abs((1.0 - self.sparsity) - n / m) > 1e-9:
            raise _CrossFieldError("structure", self.structure,
                                   f"keeps {n}/{m} of the weights: set weights.sparsity to {_fmt(1 - n / m)} "
                                   f"(it is {_fmt(self.sparsity)})")
        return self


class KWTAParams(Section):
    """k-winners-take-all: only the k = round(percent_on * units) largest outputs stay."""

    percent_on: Fraction
    boost_strength: NonNegFloat = 1.5
    boost_strength_factor: Annotated[float, _interval(0, 1, True, False)] = 0.9  # per epoch
    duty_cycle_period: PositiveInt = 1000
    k_inference_factor: Annotated[float, _interval(1, None, False, True)] = 1.0
    local: bool = False  # conv only: winners per position across channels, not over C*H*W


class LinearParams(Section):
    units: PositiveInt
    weights: WeightsParams = WeightsParams()
    kwta: KWTAParams | None = None  # None: ReLU

    @model_validator(mode="after")
    def _check(self):
        if self.kwta is not None:
            if self.kwta.local:
                raise _CrossFieldError("kwta.local", True, "only conv layers have local kWTA; set it to false")
            check_k(self.kwta, self.units, "kwta")
        return self


class ConvParams(Section):
    channels: PositiveInt
    kernel_size: PositiveInt = 3
    pool: PositiveInt = 2  # max-pool window after the activation (1 = none)
    padding: Literal["same", "valid"] = "same"  # valid: no padding, the output shrinks by kernel_size - 1
    pool_first: bool = False  # pool before the activation (the paper's conv -> max-pool -> kWTA)
    weights: WeightsParams = WeightsParams()
    kwta: KWTAParams | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.kwta is not None and self.kwta.local:
            check_k(self.kwta, self.channels, "kwta")
        return self


class ModelParams(Section):
    arch: Literal["mlp", "cnn"] = "mlp"
    conv: list[ConvParams] = []  # cnn only: conv blocks before the linear layers
    layers: list[LinearParams] = []  # hidden linear layers; the classifier head is added
    batch_norm: bool = True  # before each activation
    # weight init, uniform over the non-zero fan-in n: he = +-sqrt(6/n) (for ReLU-like units);
    # pytorch = +-1/sqrt(n), torch's default (what the paper's code used); biases +-1/sqrt(n)
    init: Literal["he", "pytorch"] = "he"

    @model_validator(mode="after")
    def _check(self):
        if self.arch == "mlp" and self.conv:
            raise _CrossFieldError("arch", self.arch, "model.conv layers need arch cnn; set model.arch=cnn or remove them")
        if self.arch == "cnn" and not self.conv:
            raise _CrossFieldError("arch", self.arch, "arch cnn needs at least one model.conv layer")
        return self


def check_k(kwta: KWTAParams, units: int, key: str) -> None:
    """k = round(percent_on * units) must leave at least one winner and one loser."""
    k = round(kwta.percent_on * units)
    if k < 1 or k >= units:
        raise _CrossFieldError(
            f"{key}.percent_on",
            kwta.percent_on,
            f"k = round(percent_on * {units}) = {k} must be >= 1 and < {units}",
        )
    k_inf = round(k * kwta.k_inference_factor)
    if k_inf > units:
        raise _CrossFieldError(
            f"{key}.k_inference_factor",
            kwta.k_inference_factor,
            f"k at inference = {k_inf} exceeds the {units} units",
        )


# ---------------------------------------------------------------- train


NOISE_LEVELS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]


class NoiseParams(Section):
    """How the test set is corrupted for the noise score (Ahmad & Scheinkman 2019).

    ``pixels`` (the paper's): in each test sample a fraction ``level`` of the features, chosen at
    random, is set to white = mean + ``white_std`` std of the raw training inputs (one value over
    all pixels, as the paper computes it on MNIST), passed through the data stage's
    standardisation. ``gaussian``: noise of std ``level`` added to the (standardised) inputs.
    ``waveform`` (speech_commands only): each test clip becomes (1 - level) * clip + level *
    uniform(-1, 1) white noise before its features are computed; the data stage writes those
    feature sets. noise score = correct classifications summed over the levels.
    """

    kind: Literal["pixels", "gaussian", "waveform"] = "pixels"
    levels: list[Annotated[float, _interval(0, None, False, True)]] = NOISE_LEVELS
    white_std: NonNegFloat = 2.0  # pixels: white = mean + white_std * std

    @model_validator(mode="after")
    def _check(self):
        if not self.levels:
            raise _CrossFieldError("levels", [], "list at least one noise level, e.g. [0.0, 0.1, 0.5]")
        if len(set(self.levels)) != len(self.levels):
            raise _CrossFieldError("levels", self.levels, "must not repeat a level")
        if self.kind in ("pixels", "waveform") and max(self.levels) > 1:
            raise _CrossFieldError("levels", self.levels, f"{self.kind} levels are fractions: each must be <= 1")
        return self


class TrainParams(Section):
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: PositiveFloat = 0.001
    momentum: Annotated[float, _interval(0, 1, False, True)] = 0.9  # sgd only
    weight_decay: NonNegFloat = 0.0
    epochs: PositiveInt = 40
    batch_size: PositiveInt = 64
    first_epoch_batch_size: PositiveInt | None = None  # the paper's small first epoch (4); null = batch_size
    schedule: Literal["constant", "step", "cosine", "onecycle"] = "cosine"
    step_size: PositiveInt = 10  # step schedule: epochs between decays
    gamma: Annotated[float, _interval(0, 1, True, False)] = 0.5  # step schedule: decay factor
    early_stopping: NonNegInt = 0  # patience in epochs without val-accuracy gain; 0 = off
    noise: NoiseParams = NoiseParams()  # the noise score's protocol
    # also train the same network without masks and kWTA (ReLU), same settings and seed:
    # its metrics go under `dense` in metrics/train.json
    dense_baseline: bool = False


# ---------------------------------------------------------------- sparsity (dynamic sparse training)


class DynamicParams(Section):
    """Masks that move during ``train``: drop the smallest weights, regrow as many elsewhere.

    Every ``update_interval`` steps a fraction of each sparse layer's non-zeros is dropped
    (cosine-decaying from ``drop_fraction`` to 0 at ``end_fraction`` of training) and as
    many are regrown: at random (``set``) or where the dense gradient is largest (``rigl``).
    ``init: erk`` redistributes the sparse layers' non-zero budget by Erdos-Renyi-Kernel.
    """

    method: Literal["none", "set", "rigl"] = "none"
    update_interval: PositiveInt = 100  # optimizer steps between mask updates
    drop_fraction: Fraction = 0.3  # of each layer's non-zeros, at the first update
    end_fraction: Annotated[float, _interval(0, 1, True, False)] = 0.75  # of all steps; no updates after
    init: Literal["uniform", "erk"] = "uniform"


class SparsityParams(Section):
    dynamic: DynamicParams = DynamicParams()


# ---------------------------------------------------------------- prune

BLOCK_PATTERN = r"^[1-9][0-9]*x[1-9][0-9]*$"


class PruneOverride(Section):
    """A per-layer target: ``{name: layers.0, sparsity: 0.97}`` (names as in the metrics)."""

    name: str
    sparsity: Sparsity


class PruneParams(Section):
    """The ``prune`` stage: which method, how sparse, which layers, how long to fine-tune.

    ``sparsity`` is a layer's target fraction of zero weights, existing zeros included
    (magnitude, block; gmp: the final sparsity). Fine-tuning uses the checkpoint's own
    ``train`` settings (optimizer, batch size, schedule) with ``lr`` and ``finetune_epochs``.
    """

    method: Literal["none", "magnitude", "gmp", "nm", "block"] = "magnitude"
    scope: Literal["layerwise", "global"] = "layerwise"  # global: one threshold across layers
    sparsity: Sparsity = 0.95
    initial_sparsity: Sparsity = 0.0  # gmp: s_i of the cubic schedule
    start_epoch: NonNegInt = 0  # gmp: first mask update at the start of this fine-tuning epoch
    end_epoch: PositiveInt = 4  # gmp: the final sparsity is reached at the end of this epoch
    frequency: PositiveInt = 10  # gmp: optimizer steps between mask updates
    n: PositiveInt = 2  # nm: at most n non-zeros ...
    m: PositiveInt = 4  # nm: ... in every m consecutive inputs of a unit
    block: str = "1x16"  # block: rows (output units) x columns (inputs)
    exclude: list[str] = ["head"]  # layers left as they are
    overrides: list[PruneOverride] = []  # per-layer targets
    finetune_epochs: NonNegInt = 5
    lr: PositiveFloat = 0.003  # fine-tuning learning rate
    # `sparsecli prune --sensitivity`: the per-layer sweep (not part of the DVC stage)
    sensitivity: list[Sparsity] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]

    @model_validator(mode="after")
    def _check(self):
        if self.n >= self.m:
            raise _CrossFieldError("n", self.n, f"must be < prune.m ({self.m})")
        if not re.match(BLOCK_PATTERN, self.block):
            raise _CrossFieldError("block", self.block, "must be ROWSxCOLS, e.g. 1x16, 16x1 or 4x4")
        if self.method == "gmp":
            if self.initial_sparsity > self.sparsity:
                raise _CrossFieldError("initial_sparsity", self.initial_sparsity,
                                       f"must be <= prune.sparsity ({_fmt(self.sparsity)})")
            if self.start_epoch >= self.end_epoch:
                raise _CrossFieldError("start_epoch", self.start_epoch, f"must be < prune.end_epoch ({self.end_epoch})")
            if self.end_epoch > self.finetune_epochs:
                raise _CrossFieldError("end_epoch", self.end_epoch,
                                       f"must be <= prune.finetune_epochs ({self.finetune_epochs})")
        if self.method == "nm":
            if self.scope == "global":
                raise _CrossFieldError("scope", self.scope, "nm keeps n of every m weights in each layer; use layerwise")
            if self.overrides:
                raise _CrossFieldError("overrides", [o.name for o in self.overrides],
                                       "nm fixes each layer's sparsity at 1 - n/m; use prune.exclude to skip a layer")
        names = [o.name for o in self.overrides]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _CrossFieldError(f"overrides.{i}.name", name, "layer named twice; keep one override per layer")
            if name in self.exclude:
                raise _CrossFieldError(f"overrides.{i}.name", name, "layer is also in prune.exclude; remove one")
        return self

    @property
    def block_shape(self) -> tuple[int, int]:
        rows, cols = self.block.split("x")
        return int(rows), int(cols)


# ---------------------------------------------------------------- hardware_map

HLS_PRECISION = re.compile(r"^ap_fixed<(\d+),(-?\d+)>$")
# the cost models' precisions (sparsecli.targets.network.PRECISION_BITS; a test keeps them equal)
Precision = Literal["int8", "int16", "fixed16", "fp16", "fp32"]


class HlsParams(Section):
    """The hls4ml export for FPGA targets (needs the optional extra ``sparsecli[fpga]``)."""

    enabled: bool = True  # write an HLS C++ project per FPGA target into exports/hls/
    csim: bool = True  # compile the bit-accurate C simulation with g++ and run it on the test split
    precision: str = "ap_fixed<16,6>"  # weights, biases, inputs, activations: ap_fixed<width,integer bits>

    @model_validator(mode="after")
    def _check(self):
        match = HLS_PRECISION.match(self.precision.replace(" ", ""))
        if not match or not 2 <= int(match[1]) <= 32 or not 0 < int(match[2]) < int(match[1]):
            raise _CrossFieldError(
                "precision", self.precision, "must be ap_fixed<W,I> with 2 <= W <= 32 and 0 < I < W, e.g. ap_fixed<16,6>"
            )
        return self

    @property
    def width(self) -> int:
        return int(HLS_PRECISION.match(self.precision.replace(" ", ""))[1])


ALL_TARGETS = ["fpga-alveo-u250", "fpga-zu3eg", "fpga-pynq-z2", "cpu-avx512", "cpu-avx2", "cpu-local"]


class HardwareMapParams(Section):
    """What the hardware-map stage predicts: which targets (hardware/<name>.yaml), how."""

    targets: list[str] = ALL_TARGETS
    # cost-model precision by target name or kind (cpu, fpga); a target not named uses its file's first
    precision: dict[str, Precision] = {"fpga": "fixed16", "cpu": "fp32"}
    batch_sizes: list[PositiveInt] = [1, 64]  # must include 1 (the latency reference)
    reuse_factor: Literal["auto"] | PositiveInt | list[PositiveInt] = "auto"  # FPGA: auto, one, or one per layer
    # FPGA sparse-sparse lanes are sized for this quantile of per-sample active inputs (test split)
    active_quantile: Annotated[float, _interval(0.5, 1.0, False, False)] = 0.99
    calibration_repeats: PositiveInt = 5  # cpu targets with `calibrated:` fields: best of n microbenchmark runs
    measure_repeats: PositiveInt = 30  # quick torch dense forward on this machine: median of n runs
    measure_threads: PositiveInt = 1  # torch intra-op threads of that timing
    onnx_opset: Annotated[int, _interval(13, 20, False, False)] = 17
    hls: HlsParams = HlsParams()

    @field_validator("reuse_factor", mode="before")
    @classmethod
    def _reuse(cls, value):
        def positive(v):
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        if value == "auto" or positive(value) or (isinstance(value, list) and value and all(map(positive, value))):
            return value
        raise ValueError("must be auto, a positive integer, or a list of them (one per weight layer)")

    @model_validator(mode="after")
    def _check(self):
        if not self.targets:
            raise _CrossFieldError("targets", self.targets, "list at least one target (a file name in hardware/)")
        for i, name in enumerate(self.targets):
            if name in self.targets[:i]:
                raise _CrossFieldError(f"targets.{i}", name, "listed twice; remove the duplicate")
        for key in self.precision:
            if key not in self.targets and key not in ("cpu", "fpga"):
                raise _CrossFieldError(
                    f"precision.{key}", self.precision[key], "key must be cpu, fpga or a name in hardware_map.targets"
                )
        if 1 not in self.batch_sizes:
            raise _CrossFieldError("batch_sizes", self.batch_sizes, "must include 1 (batch-1 latency is the reference)")
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise _CrossFieldError("batch_sizes", self.batch_sizes, "must not repeat a batch size")
        return self


# ---------------------------------------------------------------- benchmark


class BenchmarkParams(Section):
    """How the benchmark stage measures: sizes, repetitions, threads, which networks."""

    batch_size: PositiveInt = 64  # measured besides batch 1
    repeats: PositiveInt = 20  # timed samples per kernel and setting (interleaved, median and IQR)
    threads: list[NonNegInt] = [1, 0]  # the pipeline model's thread counts; 0 = all cores (references: 1)
    reference: bool = True  # also the GSC-sized reference network (90%/95% sparse, unstructured and 16x1 blocks)
    onnxruntime: bool = True  # time onnxruntime on exports/model.onnx (from hardware-map) as a baseline

    @model_validator(mode="after")
    def _check(self):
        if not self.threads:
            raise _CrossFieldError("threads", self.threads, "list at least one thread count (0 = all cores)")
        return self


# ---------------------------------------------------------------- tune

# What a tune trial reports (names and threshold ranges): the one list, in sparsecli.tune_metrics.
TuneMetric = Literal[TUNE_METRIC_NAMES + TUNE_HARDWARE_NAMES]  # type: ignore[valid-type]
# The cost models' execution modes (sparsecli.targets.network.MODES; a test compares them)
Execution = Literal["dense", "sparse-dense", "sparse-sparse"]
HARDWARE_KEYS = ("target", "execution", "batch", "precision")  # what only a hardware metric takes


class TuneObjective(Section):
    """One metric to optimise; with a threshold it is also a hard constraint.

    A hardware metric (``sparsecli.tune_metrics.HARDWARE``) names a target file
    (``hardware/<target>.yaml``) and is computed as ``hardware-map`` would: in ``execution``
    mode (default sparse-sparse), at ``batch`` (default 1), at ``precision`` (null: as
    ``hardware_map.precision`` picks for that target). ``fits`` is a constraint only (no mode,
    no threshold). ``name`` is its column in tune/trials.csv and key in tune/summary.json
    (default: the metric, or ``<metric>:<target>`` for a hardware metric). ``mode`` null: the
    metric's own direction (latency and energy min, the others max).
    """

    metric: TuneMetric
    mode: Literal["max", "min"] | None = None
    threshold: float | None = None  # max: at least this; min: at most this; null = no constraint
    target: str | None = None
    execution: Execution | None = None
    batch: PositiveInt | None = None
    precision: Precision | None = None
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data):
        if not isinstance(data, dict) or data.get("metric") not in TUNE_METRICS:
            return data
        data = dict(data)
        metric = data["metric"]
        if metric in TUNE_CONSTRAINTS:
            for key in ("mode", "threshold"):
                if data.get(key) is not None:
                    raise _CrossFieldError(key, data[key], f"{metric} is a constraint only (1 = fits): remove {key}")
        elif data.get("mode") is None:
            data["mode"] = TUNE_METRICS[metric].mode
        if metric in TUNE_HARDWARE:
            if data.get("target") is None:
                raise _CrossFieldError("target", None, f"{metric} is computed on a target: name a file in hardware/ "
                                                       "(e.g. target: fpga-zu3eg)")
            data.setdefault("execution", None)
            data["execution"] = data["execution"] or "sparse-sparse"
            data["batch"] = data.get("batch") or 1
        else:
            for key in HARDWARE_KEYS:
                if data.get(key) is not None:
                    raise _CrossFieldError(key, data[key], f"{metric} is not a hardware metric; remove {key} "
                                                           f"(hardware metrics: {', '.join(TUNE_HARDWARE_NAMES)})")
        if data.get("name") is None:
            data["name"] = f"{metric}:{data['target']}" if metric in TUNE_HARDWARE else metric
        return data

    @model_validator(mode="after")
    def _check(self):
        lo, hi = TUNE_METRICS[self.metric].low, TUNE_METRICS[self.metric].high
        if self.threshold is not None and ((lo is not None and self.threshold < lo) or (hi is not None and self.threshold > hi)):
            text = f"[{_fmt(lo) if lo is not None else '-inf'}, {_fmt(hi) if hi is not None else 'inf'}]"
            raise _CrossFieldError("threshold", self.threshold, f"{self.metric} thresholds must be in {text}")
        if not re.fullmatch(r"[A-Za-z0-9_.:@+-]+", self.name or ""):
            raise _CrossFieldError("name", self.name, "letters, digits and _ . : @ + - only (it is a CSV column)")
        return self

    @property
    def hardware(self) -> bool:
        return self.metric in TUNE_HARDWARE


class SearchDim(Section):
    """One search-space entry: a params key (dotted, as ``dvc exp run -S``) and its distribution."""

    key: str
    dist: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None  # uniform, loguniform, int (inclusive)
    high: float | None = None
    values: list[Union[bool, int, float, str, None]] | None = None  # choice

    @model_validator(mode="after")
    def _check(self):
        if self.dist == "choice":
            if not self.values or len(self.values) < 2:
                raise _CrossFieldError("values", self.values, "choice needs a list of at least 2 values")
            if self.low is not None or self.high is not None:
                raise _CrossFieldError("low", self.low, "choice takes values, not low/high")
            return self
        if self.values is not None:
            raise _CrossFieldError("values", self.values, f"{self.dist} takes low and high, not values")
        for name in ("low", "high"):
            if getattr(self, name) is None:
                raise _CrossFieldError(name, None, f"required for dist {self.dist}")
        if self.low >= self.high:
            raise _CrossFieldError("high", self.high, f"must be > low ({_fmt(self.low)})")
        if self.dist == "loguniform" and self.low <= 0:
            raise _CrossFieldError("low", self.low, "loguniform needs low > 0")
        if self.dist == "int":
            for name in ("low", "high"):
                if not float(getattr(self, name)).is_integer():
                    raise _CrossFieldError(name, getattr(self, name), "int needs whole numbers")
        return self


class TuneBudget(Section):
    trials: PositiveInt | None = 20  # at most this many configurations; null = as many as full_trainings allows
    full_trainings: PositiveFloat | None = None  # epochs to spend, in max_epochs-long trainings (the search spends them); null = no cap
    search_fraction: Annotated[float, _interval(0, 1, True, False)] = 0.5  # of full_trainings: the cheap phase samples new configurations until it has spent this share; the second phase spends the rest finishing stopped trials

    @model_validator(mode="after")
    def _check(self):
        if self.trials is None and self.full_trainings is None:
            raise _CrossFieldError("trials", None, "needs a budget: set tune.budget.full_trainings, or a number of trials")
        return self


class TuneParams(Section):
    """Multi-objective, threshold-constrained, multi-fidelity search (see sparsecli.tuning)."""

    searcher: Literal["tpe", "nsga2", "random"] = "tpe"
    startup_trials: Annotated[int, _interval(2, None, False, True)] = 8  # tpe: random trials first; nsga2: population
    objectives: list[TuneObjective] = [TuneObjective(metric="accuracy"), TuneObjective(metric="weight_sparsity")]
    space: list[SearchDim] = []
    min_epochs: PositiveInt = 1  # cheapest fidelity (first ASHA rung)
    max_epochs: PositiveInt | None = None  # full fidelity; null = train.epochs
    reduction_factor: Annotated[int, _interval(2, None, False, True)] = 3  # ASHA keeps 1 in reduction_factor per rung
    second_phase: bool = True  # finish the stopped, non-dominated, not-yet-infeasible trials at max_epochs
    select: Literal["max_accuracy", "max_sparsity", "min_latency", "knee"] = "knee"  # min_latency: a latency objective's lowest
    budget: TuneBudget = TuneBudget()

    @model_validator(mode="after")
    def _check(self):
        if not self.objectives:
            raise _CrossFieldError("objectives", [], "needs at least one {metric, mode, threshold}")
        seen = set()
        for i, objective in enumerate(self.objectives):
            if objective.name in seen:
                key = "metric" if objective.name == objective.metric else "name"
                raise _CrossFieldError(f"objectives.{i}.{key}", getattr(objective, key),
                                       "listed twice" + (" (give each a different name)" if key == "name" else ""))
            seen.add(objective.name)
        if self.select == "min_latency" and not any(o.metric in TUNE_LATENCIES for o in self.objectives):
            raise _CrossFieldError("select", self.select, f"needs a {' or '.join(TUNE_LATENCIES)} objective")
        if all(o.metric in TUNE_CONSTRAINTS for o in self.objectives):
            raise _CrossFieldError("objectives", [o.name for o in self.objectives],
                                   "needs at least one metric to optimise besides the constraints")
        keys = [dim.key for dim in self.space]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                raise _CrossFieldError(f"space.{i}.key", key, "listed twice")
        if self.max_epochs is not None and self.min_epochs > self.max_epochs:
            raise _CrossFieldError("min_epochs", self.min_epochs, f"must be <= tune.max_epochs ({self.max_epochs})")
        return self


# ---------------------------------------------------------------- paper

NETWORK_NAME = r"^[a-z0-9][a-z0-9_-]*$"
PAPER_KEYS = ("model.", "train.", "sparsity.")  # what a network may change; data and seed are shared


class PaperNetwork(Section):
    """One network of the paper reproduction: this file's model/train/sparsity with keys changed."""

    kind: Literal["dense", "sparse"]
    set: dict[str, Any] = {}  # dotted key -> value (the `dvc exp run -S` syntax), model.*, train.*, sparsity.*

    @field_validator("set", mode="after")
    @classmethod
    def _flat(cls, value):
        # `dvc exp run -S paper.networks.X.set.train.lr=0.01` nests the key: flatten it (later keys win)
        return flatten(value)


class PaperParams(Section):
    """The ``paper-train`` (network x seed, DVC matrix) and ``paper`` (aggregate) stages."""

    seeds: list[NonNegInt] = [1, 2, 3, 4, 5]
    networks: dict[str, PaperNetwork] = {}

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.seeds)) != len(self.seeds):
            raise _CrossFieldError("seeds", self.seeds, "must not repeat a seed")
        for name, network in self.networks.items():
            if not re.match(NETWORK_NAME, name):
                raise _CrossFieldError(f"networks.{name}", name,
                                       "a network name is lower-case letters, digits, - and _ (it names folders)")
            for key in network.set:
                if not str(key).startswith(PAPER_KEYS):
                    raise _CrossFieldError(f"networks.{name}.set.{key}", network.set[key],
                                           "a network may change model.*, train.* and sparsity.* keys only")
        return self


# ---------------------------------------------------------------- all


class Params(Section):
    seed: NonNegInt = 42
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    sparsity: SparsityParams = SparsityParams()
    prune: PruneParams = PruneParams()
    hardware_map: HardwareMapParams = HardwareMapParams()
    benchmark: BenchmarkParams = BenchmarkParams()
    tune: TuneParams = TuneParams()
    paper: PaperParams = PaperParams()

    @model_validator(mode="after")
    def _check_noise(self):
        if self.train.noise.kind == "waveform" and self.data.source != "speech_commands":
            raise _CrossFieldError("train.noise.kind", "waveform",
                                   f"needs data.source speech_commands (the data is {self.data.source}); use pixels or gaussian")
        return self

    @model_validator(mode="after")
    def _check_paper_networks(self):
        base = self.model_dump(exclude={"paper"})
        for name, network in self.paper.networks.items():
            raw = copy.deepcopy(base)
            where = f"paper.networks.{name}.set"
            try:
                for key, value in network.set.items():
                    set_key(raw, str(key), value, where)
            except ParamsError as e:
                raise _CrossFieldError("paper.networks", name, str(e)) from None
            text = _unknown_keys(raw, Params, "")
            if text is None:
                try:
                    Params.model_validate(raw)
                except ValidationError as e:
                    text = _describe(e.errors()[0], raw)
            if text is not None:
                bad = next((k for k in network.set if text.startswith(str(k))), None)
                message = text.split(": ", 1)[-1]
                if bad is None:
                    raise _CrossFieldError(where, list(network.set), f"makes {text}")
                raise _CrossFieldError(f"{where}.{bad}", network.set[bad], message)
        return self


    def flat(self) -> dict[str, Any]:
        """Every scalar as ``dotted.key -> value`` (for TensorBoard HParams and reports)."""
        return flatten(self.model_dump())


# ---------------------------------------------------------------- checks across sections, per stage

# A check that joins two sections belongs to the stage that reads both: `sparsecli train --set
# train.epochs=3` must not fail because of tune.min_epochs. Stage name -> its checks.


def _check_tune_fidelity(params: Params) -> str | None:
    if params.tune.max_epochs is None and params.tune.min_epochs > params.train.epochs:
        return (f"tune.min_epochs = {params.tune.min_epochs}: must be <= the full training, "
                f"train.epochs ({params.train.epochs}), or set tune.max_epochs")
    return None


STAGE_CHECKS = {"tune": (_check_tune_fidelity,)}


def check_stage(params: Params, stage: str, source: str = "params.yaml") -> None:
    """Raise ParamsError for the first cross-section check of ``stage`` that fails."""
    for check in STAGE_CHECKS.get(stage, ()):
        problem = check(params)
        if problem:
            raise ParamsError(f"{source}: {problem}")


# ---------------------------------------------------------------- loading


class _CrossFieldError(ValueError):
    """Raised inside validators: names the sub-key, relative to the model that raised it."""

    def __init__(self, key: str, value: Any, message: str):
        super().__init__(message)
        self.key, self.value, self.message = key, value, message

    def __str__(self) -> str:
        return f"@{self.key}@{_show(self.value)}@{self.message}"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (dict, list)) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


class _Loader(yaml.SafeLoader):
    """YAML as DVC reads and writes it (YAML 1.2): ``1e-3`` is a float (PyYAML makes a string of it),
    and only true/false are booleans, so yes, no, on and off stay strings (e.g. the words in data.words)."""


def _yaml12(tag: str, regexp: re.Pattern) -> bool:
    # YAML 1.1's booleans and base-60 numbers (2:4 -> 124) are strings in YAML 1.2: an N:M
    # weights.structure must read as DVC writes it
    return tag != "tag:yaml.org,2002:bool" and not (tag.endswith((":int", ":float")) and regexp.match("2:4"))


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if _yaml12(tag, regexp)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int",
                              re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
                              list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value`` with the value parsed as YAML, as ``dvc exp run -S`` does."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ParamsError(f"--set {text!r}: expected key.path=value, e.g. --set train.lr=0.05")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_key(tree: dict, key: str, value: Any, source: str) -> None:
    """Set ``tree[key]`` where key is a dotted path with list indices as numbers."""
    parts = key.split(".")
    node: Any = tree
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ParamsError(
                    f"{source}: {here}: index out of range; {'.'.join(parts[:depth])} has {len(node)} items (0..{len(node) - 1})"
                )
            idx = int(part)
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ParamsError(f"{source}: {here}: {'.'.join(parts[:depth])} is a value, not a section")


def read_yaml(path: Path, what: str = "params file") -> dict:
    if not path.is_file():
        raise ParamsError(f"{path}: {what} not found; run from the project root or pass --params PATH")
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ParamsError(f"{path}: not valid YAML{where}; fix the syntax") from None
    if raw is None:
        raise ParamsError(f"{path}: empty; write the {what}'s sections (seed, data, model, ...), "
                          "e.g. copy one from `sparsecli init --list`")
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections (seed, data, model, ...) at the top")
    return raw


def load_params(
    path: str | Path = "params.yaml",
    overrides: list[str] = (),
    overlays: list[dict[str, Any] | tuple[str, dict[str, Any]]] = (),
    stage: str | None = None,
) -> Params:
    """Read a params file, apply overlays (dotted key -> value) then ``--set`` overrides, validate.

    The file is validated on its own first, then with each overlay, so an error names the file the
    wrong value came from: the params file or the overlay (given as ``(source, mapping)``, e.g.
    tune/best_params.yaml); ``--set`` values are checked as edits of the params file. ``stage``
    adds that stage's cross-section checks (STAGE_CHECKS).
    """
    path = Path(path)
    raw = read_yaml(path)
    params = validate(raw, str(path))
    for overlay in overlays:
        source, overlay = overlay if isinstance(overlay, tuple) else (str(path), overlay)
        for key, value in overlay.items():
            set_key(raw, str(key), value, source)
        params = validate(raw, source)
    if overrides:
        for text in overrides:
            key, value = parse_override(text)
            set_key(raw, key, value, "--set")
        params = validate(raw, str(path))
    if stage is not None:
        check_stage(params, stage, str(path))
    return params


def validate(raw: dict, source: str, model: type[BaseModel] = Params):
    """Validate a raw dict; the first problem becomes one ParamsError line naming the key.

    Strict: a params file is data, so ``"32"`` is not an integer and ``6.0`` is not an epoch count
    (an integer is a valid float)."""
    unknown = _unknown_keys(raw, model, "")
    if unknown:
        raise ParamsError(f"{source}: {unknown}")
    try:
        return model.model_validate(raw, strict=True)
    except ValidationError as e:
        errors = e.errors()
        first = _describe(errors[0], raw)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ParamsError(f"{source}: {first}{more}") from None


def _unknown_keys(raw: Any, model: type[BaseModel], prefix: str) -> str | None:
    """The first key that the model does not define, with the keys it allows."""
    if not isinstance(raw, dict):
        return None
    fields = model.model_fields
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key not in fields:
            allowed = ", ".join(fields)
            return f"{path}: unknown key; allowed keys{' in ' + prefix[:-1] if prefix else ''}: {allowed}"
        sub = _submodel(fields[key].annotation)
        if sub is None:
            continue
        kind, cls = sub
        if kind == "model":
            found = _unknown_keys(value, cls, f"{path}.")
            if found:
                return found
        elif isinstance(value, list):
            for i, item in enumerate(value):
                found = _unknown_keys(item, cls, f"{path}.{i}.")
                if found:
                    return found
    return None


def _submodel(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """('model', cls) for a nested section, ('list', cls) for a list of them, else None."""
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        for arg in get_args(annotation):
            found = _submodel(arg)
            if found:
                return found
        return None
    if origin is list:
        (item,) = get_args(annotation) or (None,)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return ("list", item)
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ("model", annotation)
    return None


_TYPE_MESSAGES = {
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping of keys",
    "model_attributes_type": "must be a mapping of keys",
    "missing": "missing; this key is required",
}


def _describe(error: dict, raw: dict) -> str:
    loc = [str(p) for p in error["loc"] if not _is_union_tag(p)]
    msg = error["msg"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, _CrossFieldError):
        loc = loc + inner.key.split(".")
        return f"{'.'.join(loc)} = {_show(inner.value)}: {inner.message}"
    text = str(inner) if inner is not None else msg
    if text.startswith("@"):  # a _CrossFieldError flattened to text by pydantic
        _, key, shown, message = text.split("@", 3)
        return f"{'.'.join(loc + key.split('.'))} = {shown}: {message}"
    kind = error["type"]
    if kind == "literal_error":
        text = "must be one of: " + ctx.get("expected", "").replace("'", "").replace(" or ", ", ")
    elif kind in _TYPE_MESSAGES:
        text = _TYPE_MESSAGES[kind]
    elif kind == "value_error":
        text = text.removeprefix("Value error, ")
    key = ".".join(loc)
    if kind == "missing":
        return f"{key}: {text}"
    return f"{key} = {_show(value)}: {text}"


def _is_union_tag(part: Any) -> bool:
    # pydantic adds the chosen union member's class name to a loc (e.g. 'KWTAParams')
    return isinstance(part, str) and part[:1].isupper()


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (dict, list)):
        text = yaml.safe_dump(value, default_flow_style=True).strip()
        return text if len(text) < 40 else text[:37] + "..."
    if value is None:
        return "null"
    return str(value)
