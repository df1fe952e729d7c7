"""Dataset sources and the deterministic split.

``load_source(params)`` returns features [N, F] (float32), labels [N] and the image shape
(C, H, W) when the features are images (needed by the CNN), else None.
"""

from __future__ import annotations

import numpy as np

from sparsecli.params import DataParams


def load_source(data: DataParams, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[int, ...] | None]:
    if data.source == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()  # ships inside scikit-learn: no download
        return digits.data.astype(np.float32) / 16.0, digits.target.astype(np.int64), (1, 8, 8)
    if data.source == "synthetic":
        from sklearn.datasets import make_classification

        s = data.synthetic
        x, y = make_classification(
            n_samples=s.samples, n_features=s.features, n_informative=s.informative,
            n_redundant=s.redundant, n_classes=s.classes, n_clusters_per_class=1, class_sep=s.class_sep,
            random_state=seed,
        )
        return x.astype(np.float32), y.astype(np.int64), None
    if data.source == "idx":
        from sparsecli.data.idx import load_idx

        return load_idx(data.path, data.idx, data.raw_dir)
    from sparsecli.data.files import load_csv, load_npz

    if data.source == "npz":
        return load_npz(data.path)
    return load_csv(data.path, data.label_column)
