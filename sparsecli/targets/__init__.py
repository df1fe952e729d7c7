"""Hardware targets (`hardware/*.yaml`) and the cost models that predict a sparse
network's latency, throughput, energy and resource use on them.

Imports only NumPy, pydantic and PyYAML: torch is imported only inside the functions
that need a model (`network_from_model`, `measure.time_forward`).
"""

from sparsecli.targets.calibrate import calibrate
from sparsecli.targets.from_model import network_from_model
from sparsecli.targets.loader import load_target, load_targets
from sparsecli.targets.network import MODES, PRECISION_BITS, LayerShape, as_network, network_to_dicts
from sparsecli.targets.predict import predict, summary
from sparsecli.targets.schema import CpuTarget, FpgaTarget, Target
from sparsecli.targets.synthesis import read_report

__all__ = [
    "MODES",
    "PRECISION_BITS",
    "CpuTarget",
    "FpgaTarget",
    "LayerShape",
    "Target",
    "as_network",
    "calibrate",
    "load_target",
    "load_targets",
    "network_from_model",
    "network_to_dicts",
    "predict",
    "read_report",
    "summary",
]
