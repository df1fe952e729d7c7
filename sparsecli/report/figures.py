"""Plots for the report: one consistent matplotlib style, PNG bytes out (no display needed)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

STYLE = {
    "figure.figsize": (6.4, 3.8),
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
    "legend.frameon": False,
}


@contextmanager
def figure(title: str, xlabel: str, ylabel: str) -> Iterator:
    """Yield an Axes; the finished figure's PNG bytes are in ``ax.figure.png`` after the block."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        try:
            yield ax
            if ax.get_legend() is None and ax.get_legend_handles_labels()[0]:
                ax.legend()
            fig.tight_layout()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png")
            fig.png = buffer.getvalue()
        finally:
            plt.close(fig)
