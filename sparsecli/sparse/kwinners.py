"""k-winners-take-all (kWTA) activations with boosting, after Ahmad & Scheinkman (2019).

Only the k units with the largest *boosted* value stay active; their output is the
original, unboosted value and every other unit outputs zero. Boosting,
``x * exp(boost_strength * (target_density - duty_cycle))``, favours units that have won
less often than the target density (= percent_on), so every unit gets used. Duty cycles
move only in training; ``boost_strength`` decays by ``boost_strength_factor`` once per
epoch. k and k at inference are fixed at construction, and all state is in buffers, so
it is saved in the state_dict.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def winners(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A 0/1 float mask of the k largest entries of each row of a 2-d tensor.

    A per-row threshold from ``np.partition`` is several times faster than ``torch.topk``
    on CPU; rows where ties make the threshold admit more than k fall back to topk, so
    exactly k win in every row.
    """
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return _topk_mask(scores, k)  # exporters need torch ops (ONNX TopK), not numpy
    values = scores.detach().contiguous().numpy()
    units = values.shape[1]
    threshold = np.partition(values, units - k, axis=1)[:, units - k: units - k + 1]
    won = values >= threshold
    if (np.count_nonzero(won, axis=1) != k).any():
        return _topk_mask(scores, k)
    return torch.from_numpy(won.astype(values.dtype))


def _topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    top = scores.topk(k, dim=1, sorted=False).indices
    return torch.zeros_like(scores).scatter_(1, top, 1.0)


class _KWinnersBase(nn.Module):
    def __init__(
        self,
        units: int,
        channels: int,
        percent_on: float,
        boost_strength: float,
        boost_strength_factor: float,
        duty_cycle_period: int,
        k_inference_factor: float,
    ):
        super().__init__()
        k = round(percent_on * units)
        if not 1 <= k < units:
            raise ValueError(f"k = round({percent_on} * {units}) = {k} must be >= 1 and < {units}")
        self.units = units
        self.percent_on = percent_on
        self.k = k
        self.k_inference = min(units, round(k * k_inference_factor))
        self.boost_strength_factor = boost_strength_factor
        self.duty_cycle_period = duty_cycle_period
        self.register_buffer("boost_strength", torch.tensor(float(boost_strength)))
        self.register_buffer("duty_cycle", torch.zeros(channels))
        self.register_buffer("learning_iterations", torch.tensor(0, dtype=torch.long))

    def update_boost_strength(self) -> None:
        """Called once per epoch by the training loop."""
        self.boost_strength.mul_(self.boost_strength_factor)

    def boost_factors(self) -> torch.Tensor:
        return torch.exp(self.boost_strength * (self.percent_on - self.duty_cycle))

    @torch.no_grad()
    def _update_duty_cycle(self, wins_per_channel: torch.Tensor, samples: int) -> None:
        """Running mean of each channel's win rate over the last duty_cycle_period samples."""
        self.learning_iterations += samples
        period = min(self.duty_cycle_period, int(self.learning_iterations))
        self.duty_cycle.mul_(period - samples).add_(wins_per_channel).div_(period)

    def extra_repr(self) -> str:
        return f"units={self.units}, k={self.k}, k_inference={self.k_inference}"


class KWinners(_KWinnersBase):
    """kWTA over the features of a [batch, units] input."""

    def __init__(self, units: int, percent_on: float, boost_strength: float = 1.5,
                 boost_strength_factor: float = 0.9, duty_cycle_period: int = 1000,
                 k_inference_factor: float = 1.0):
        super().__init__(units, units, percent_on, boost_strength, boost_strength_factor,
                         duty_cycle_period, k_inference_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k if self.training else self.k_inference
        if k >= self.units:
            return x
        with torch.no_grad():
            boosted = x * self.boost_factors() if self.boost_strength > 0 else x
            mask = winners(boosted, k)
            if self.training:
                self._update_duty_cycle(mask.sum(dim=0), x.shape[0])
        return x * mask


class KWinners2d(_KWinnersBase):
    """kWTA over a [batch, C, H, W] input: global over C*H*W, or local across channels.

    Duty cycles and boosting are per channel (a channel's win rate over positions).
    """

    def __init__(self, channels: int, height: int, width: int, percent_on: float,
                 boost_strength: float = 1.5, boost_strength_factor: float = 0.9,
                 duty_cycle_period: int = 1000, k_inference_factor: float = 1.0,
                 local: bool = False):
        units = channels if local else channels * height * width
        super().__init__(units, channels, percent_on, boost_strength, boost_strength_factor,
                         duty_cycle_period, k_inference_factor)
        self.local = local
        self.positions = height * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k if self.training else self.k_inference
        if k >= self.units:
            return x
        with torch.no_grad():
            boosted = x
            if self.boost_strength > 0:
                boosted = x * self.boost_factors().view(1, -1, 1, 1)
            if self.local:  # winners across channels at each position
                channels_last = boosted.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
                mask = winners(channels_last, k).view(x.shape[0], x.shape[2], x.shape[3], x.shape[1])
                mask = mask.permute(0, 3, 1, 2)
            else:
                mask = winners(boosted.flatten(1), k).view_as(x)
            if self.training:
                wins = mask.sum(dim=(0, 2, 3)) / self.positions
                self._update_duty_cycle(wins, x.shape[0])
        return x * mask


def update_boost_strength(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, _KWinnersBase):
            module.update_boost_strength()


def is_kwinners(module: nn.Module) -> bool:
    return isinstance(module, _KWinnersBase)
