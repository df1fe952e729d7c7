"""Hardware targets (`hardware/*.yaml`) and the cost models that predict a sparse
network's latency, throughput, energy and resource use on them.

Imports only NumPy, pydantic and PyYAML, so the hardware-map stage can run without torch.
"""

from sparsecli.targets.calibrate import calibrate
from sparsecli.targets.loader import load_target, load_targets
from sparsecli.targets.network import MODES, PRECISION_BITS, LayerShape, as_network, network_to_dicts
from sparsecli.targets.predict import predict, summary
from sparsecli.targets.schema import CpuTarget, FpgaTarget, Target

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
    "network_to_dicts",
    "predict",
    "summary",
]
