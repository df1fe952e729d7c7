"""Hyperparameter search for the ``tune`` stage, on Ray Tune with Optuna's samplers.

- ``objectives``: what a trial reports; objectives and thresholds (constraints), maximisation form.
- ``pareto``: dominance, the non-dominated front, hypervolume, NSGA-II ordering.
- ``select``: the rules that pick one front point (``tune.select``).
- ``space``: search-space keys and distributions, validated before Ray starts.
- ``trainable``: a trial = ``training.fit`` of the same network; epochs are the fidelity.
- ``scheduler``: multi-objective ASHA over epochs, with the cost budget.
- ``searcher``: Optuna through ``OptunaSearch``, told only full-fidelity results as complete.
- ``monitor``: one progress line per finished trial; ``session``: connecting to Ray.
- ``search``: the two phases (cheap search, then finishing promising cheap trials).
- ``analysis``: the feasible front, its hypervolume, the pick and the summary.

Only ``space``, ``objectives``, ``pareto``, ``select`` and ``analysis`` are imported without
Ray, so bad params fail before Ray is even imported.
"""
