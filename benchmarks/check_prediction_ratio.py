"""Check every cost-model ``prediction_ratio`` in a benchmark stage's metrics (issue 13, acceptance 3).

    python benchmarks/check_prediction_ratio.py metrics/benchmark.json

Prints predicted / measured latency (``ratio``: the median over the interleaved rounds of the
ratio within a round; ``ratio_of_medians``; ``ratio_q1``, first quartiles) per network, mode and batch, and exits 1 if any ``ratio`` lies outside [0.67, 1.5] or is missing.
"""

from __future__ import annotations

import json
import sys

BOUNDS = (0.67, 1.5)


def out_of_bounds(metrics: dict) -> list[str]:
    """One line per ratio outside ``BOUNDS`` (or missing), for every network that has a cost model."""
    bad = []
    for label, entry in metrics["networks"].items():
        for mode, by_batch in (entry.get("prediction_ratio") or {}).items():
            for batch, r in by_batch.items():
                ratio = (r or {}).get("ratio")
                line = f"{label} {mode} b{batch}: " + (
                    f"{ratio:.2f} (of medians {r.get('ratio_of_medians') or float('nan'):.2f}, "
                    f"q1 {r.get('ratio_q1') or float('nan'):.2f})" if ratio else "missing")
                print(line)
                if not ratio or not BOUNDS[0] <= ratio <= BOUNDS[1]:
                    bad.append(line)
    return bad


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "metrics/benchmark.json"
    bad = out_of_bounds(json.loads(open(path).read()))
    print(f"{len(bad)} prediction_ratio outside [{BOUNDS[0]}, {BOUNDS[1]}]"
          + ("" if not bad else ":\n  " + "\n  ".join(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
