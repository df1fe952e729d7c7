"""The second phase's searcher: which stopped trial to finish next, decided one at a time.

The cheap phase leaves a pool of stopped trials feasible as far as a short training tells
(``search.second_phase_candidates``, ranked by their rung results). Choosing all the
finishes up front from rung results alone wasted them: a short training's accuracy says
little about the full one's (on the default problem the 2-epoch and 40-epoch val accuracies
of rung-feasible trials correlate at about 0.35), so finishes chosen from the rung front
were often all dominated by one full-length trial, and the front collapsed to one point.

Here each finish is chosen when a worker is free, by expected hypervolume improvement
(EHVI) over the front *known at full length so far* (full-length trials of both phases),
per epoch it costs. A candidate's full-length values are predicted from its rung values:
settled metrics are exact; for the others, a linear fit of full-length on rung values over
the trials seen at both, shrunk toward "the rung order holds, with the pool's spread" while
such pairs are few (``predictor``). Running finishes count at their predicted values (the "kriging believer"),
so two workers do not finish two candidates for the same gap. With weight sparsity exact
at any epoch, a candidate sparser than the front's sparse end adds area whenever it meets
the accuracy threshold, so the finishes spread along the sparsity axis instead of piling up
behind one dominant point. Ties (no expected gain): the pool's own order.

With ``lag`` (at least the number of workers, as the cheap phase's), finish k (counting from 0)
is chosen only once finishes 0 ... k - lag have ended, from those, in order; the later ones
count at their believed values even if they ended meanwhile. So which trials are finished does
not depend on which of the running finishes happened to end first.

Nothing here enters the front: the front is built from the finished trials' own full-length
results (``analysis``). The state (pool, budget ledger, known front) is saved with the Ray
experiment, so an interrupted second phase resumes without finishing a trial twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sparsecli.tuning.objectives import Objectives
from sparsecli.tuning.pareto import hypervolume, non_dominated
from sparsecli.tuning.searcher import PickledSearcher
from sparsecli.tuning.trainable import DIVERGED_KEY

SAMPLES = 64  # draws of the uncertain coordinates per candidate (a fixed, seeded set)
PRIOR_PAIRS = 3  # the predictor's prior, in pairs' worth


@dataclass(frozen=True)
class Candidate:
    name: str
    config: dict  # the sampled keys, the checkpoint to continue from, the trial it finishes
    epochs: int  # where it stopped
    vector: tuple[float, ...]  # its rung values, maximisation form


def predictor(objectives: Objectives, pairs: list[tuple[tuple, tuple]], pool: list[tuple]):
    """A function of rung values giving (mean, spread) per coordinate of the full-length values.

    ``pairs``: (rung vector, full vector) of trials seen at both, at the same rung; ``pool``:
    the candidates' rung vectors there. Per unsettled coordinate, full = mean(f) + slope *
    (rung - mean(r)); slope and spread are the pairs' least-squares slope (clipped to [0, 1])
    and residual spread, each shrunk toward a prior worth ``PRIOR_PAIRS`` pairs: slope 1 (the
    rung order holds) and the pool's spread (a few pairs understate the noise)."""
    fits = []
    for k in range(len(objectives.metrics)):
        if objectives.is_settled(k):
            fits.append((0.0, 1.0, 0.0, 0.0))  # exact: shift, slope, centre, spread
            continue
        values = [p[k] for p in pool if math.isfinite(p[k])]
        prior = float(np.std(values)) if len(values) > 1 else 0.0
        finite = [(a[k], b[k]) for a, b in pairs if math.isfinite(a[k]) and math.isfinite(b[k])]
        if not finite:
            fits.append((0.0, 1.0, 0.0, prior))
            continue
        r, f = np.array(finite).T
        n, centre = len(r), float(np.mean(r))
        fitted = float(np.clip(np.cov(r, f, bias=True)[0, 1] / np.var(r), 0.0, 1.0)) if np.var(r) > 0 else 1.0
        residual = f - (np.mean(f) + fitted * (r - centre))
        slope = (n * fitted + PRIOR_PAIRS) / (n + PRIOR_PAIRS)
        spread = math.sqrt((float(np.sum(residual ** 2)) + PRIOR_PAIRS * prior ** 2) / (n + PRIOR_PAIRS))
        fits.append((float(np.mean(f)) - centre, slope, centre, spread))

    def predict(rung: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
        mean = np.array([rung[k] + shift + (slope - 1.0) * (rung[k] - centre) if math.isfinite(rung[k]) else rung[k]
                         for k, (shift, slope, centre, _) in enumerate(fits)])
        return mean, np.array([fit[3] for fit in fits])

    return predict


def expected_improvement(mean: np.ndarray, spread: np.ndarray, front: list[tuple], reference: tuple,
                         draws: np.ndarray) -> float:
    """Mean hypervolume gain of a point drawn around ``mean`` (normal, ``spread`` per coordinate)."""
    base = hypervolume(front, reference)
    points = mean + draws[:, : len(mean)] * spread
    return float(np.mean([hypervolume([*front, tuple(p)], reference) - base for p in points]))


class FinishSearch(PickledSearcher):
    """Suggests, one at a time, which candidate to finish at ``full_epochs`` (see the module doc)."""

    def __init__(self, candidates: list[Candidate], objectives: Objectives, full_epochs: int,
                 budget_epochs: float | None, full: list[tuple], pairs: list[tuple[int, tuple, tuple]],
                 lag: int | None = None):
        super().__init__(metric=None, mode=None)
        self.pool = list(candidates)  # the pool's own order breaks ties
        self.objectives = objectives
        self.full_epochs = full_epochs
        self.left = budget_epochs  # None: finish every candidate
        self.full = list(full)  # full-length feasible vectors, maximisation form
        self.pairs = list(pairs)  # (rung epoch, rung vector, full vector)
        self.rung_vectors = [(c.epochs, c.vector) for c in candidates]
        self.lag = lag
        self.running: dict[str, tuple[Candidate, tuple]] = {}  # trial id -> candidate, its believed full vector
        self.ended: dict[str, dict | None] = {}  # trial id -> its last result (None: failed), not yet learnt from
        self.draws = np.random.default_rng(0).standard_normal((SAMPLES, len(objectives.metrics)))

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # objectives are our own; Ray's single metric/mode does not apply

    def suggest(self, trial_id: str):
        if self.lag:
            known = list(self.running)[: max(0, len(self.running) - self.lag + 1)]  # chosen in order
            if not all(t in self.ended for t in known):
                return None  # Ray asks again at its next step
            for t in known:
                self._learn(t, self.ended.pop(t))
        affordable = [c for c in self.pool if self.left is None or self.full_epochs - c.epochs <= self.left]
        if not affordable:
            return PickledSearcher.FINISHED
        choice, believed = self.choose(affordable)
        self.pool.remove(choice)
        if self.left is not None:
            self.left -= self.full_epochs - choice.epochs
        self.running[trial_id] = (choice, believed)
        return dict(choice.config)

    def choose(self, candidates: list[Candidate]) -> tuple[Candidate, tuple]:
        """The candidate of largest expected gain per epoch (ties: the first), and its predicted vector."""
        predictors = {e: predictor(self.objectives, [(r, f) for k, r, f in self.pairs if k == e],
                                   [v for k, v in self.rung_vectors if k == e]) for e in {c.epochs for c in candidates}}
        known = self.full + [believed for _, believed in self.running.values()]
        front = [known[i] for i in non_dominated(known)]
        # points: only a nadir reference (a min hardware objective without threshold) reads them
        reference = self.objectives.reference(known or [v for _, v in self.rung_vectors])
        best, best_gain, best_mean = None, -1.0, None
        for candidate in candidates:
            mean, spread = predictors[candidate.epochs](candidate.vector)
            gain = expected_improvement(mean, spread, front, reference, self.draws)
            gain /= self.full_epochs - candidate.epochs
            if gain > best_gain + 1e-15:
                best, best_gain, best_mean = candidate, gain, mean
        return best, tuple(float(v) for v in best_mean)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.running:
            return
        if self.lag:
            self.ended[trial_id] = None if error else result
        else:
            self._learn(trial_id, None if error else result)

    def _learn(self, trial_id: str, result: dict | None) -> None:
        """A finish ended: its full-length values join what is known (feasible: the front; any: the predictor)."""
        entry = self.running.pop(trial_id)
        if not result or DIVERGED_KEY in result:
            return
        if result.get("epoch", 0) < self.full_epochs or any(m not in result for m in self.objectives.metrics):
            return
        vector = self.objectives.vector(result)
        self.pairs.append((entry[0].epochs, entry[0].vector, vector))
        if self.objectives.feasible(result):
            self.full.append(vector)
