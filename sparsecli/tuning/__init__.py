"""Hyperparameter search for the ``tune`` stage, on Ray Tune with Optuna's samplers.

- ``objectives``: objectives and thresholds (constraints), maximisation form.
- ``pareto``: dominance, the non-dominated front, hypervolume, NSGA-II ordering.
- ``select``: the rules that pick one front point (``tune.select``).
- ``space``: search-space keys and distributions, validated before Ray starts.
- ``trainable``: a trial = ``training.fit`` of the same network; epochs are the fidelity.
- ``scheduler``: multi-objective ASHA over epochs, with the cost budget.
- ``searcher``: one Optuna study per fidelity (BOHB's recipe); samples from the highest one with enough data.
- ``monitor``: one progress line per finished trial; ``session``: connecting to Ray.
- ``search``: the two phases (cheap search, then finishing promising cheap trials), spending the budget.
- ``analysis``: the feasible front, its hypervolume, the pick and the summary.

The one list of what a trial reports is ``sparsecli.tune_metrics`` (a leaf ``params`` reads).

Only ``space``, ``objectives``, ``pareto``, ``select`` and ``analysis`` are imported without
Ray, so bad params fail before Ray is even imported.
"""
