"""Schedules over optimizer steps: gradual magnitude pruning and the dynamic-sparsity drop fraction."""

from __future__ import annotations

import math

from torch import nn

from sparsecli.sparse.pruning import PruningPlan


def gmp_sparsity(step: int, initial: float, final: float, start: int, end: int) -> float:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (n Δt))^3, with n Δt = end - start.

    Before ``start`` it is s_i, after ``end`` s_f.
    """
    progress = min(max((step - start) / (end - start), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


def cosine_decay(step: int, initial: float, end: int) -> float:
    """``initial`` at step 0, decaying along half a cosine to 0 at ``end``."""
    return 0.5 * initial * (1.0 + math.cos(math.pi * min(step, end) / end))


class GradualPruning:
    """An ``after_step`` hook for ``fit``: prunes ``plan`` along the GMP schedule.

    Masks are updated at ``start``, every ``frequency`` steps after it, and at ``end``
    (steps counted from the start of fine-tuning; call it with step 0 before the first
    step so a schedule starting at 0 prunes to s_i right away). Each layer follows the
    schedule towards its own final target, from ``min(initial, target)``.
    """

    def __init__(self, plan: PruningPlan, initial: float, start: int, end: int, frequency: int):
        self.plan, self.initial, self.start, self.end, self.frequency = plan, initial, start, end, frequency
        self.updates: list[int] = []

    def is_update(self, step: int) -> bool:
        return self.start <= step <= self.end and ((step - self.start) % self.frequency == 0 or step == self.end)

    def sparsity(self, step: int, final: float) -> float:
        return gmp_sparsity(step, min(self.initial, final), final, self.start, self.end)

    def __call__(self, model: nn.Module, step: int) -> None:
        if self.is_update(step):
            self.plan.prune(lambda final: self.sparsity(step, final))
            self.updates.append(step)
