"""ONNX export of a sparsecli model, kWTA included, checked against torch with onnxruntime.

kWTA exports as TopK + ScatterElements + Mul (the eval-mode boost factors are constants
of the graph), so the ONNX model computes exactly what torch computes; masked weights
are plain zeros in the Gemm/Conv initialisers. The batch axis is dynamic.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparsecli.evaluation import Split

INPUT, OUTPUT = "input", "logits"


def export_onnx(model: nn.Module, path: Path, features: int, opset: int) -> None:
    """Write `model` (eval mode) to `path` as ONNX with a dynamic batch axis."""
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
            torch.onnx.export(
                model,
                (torch.zeros(1, features),),
                str(path),
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
    finally:
        model.train(was_training)


@torch.no_grad()
def verify_onnx(path: Path, model: nn.Module, split: Split) -> dict:
    """Run the ONNX file with onnxruntime on `split` and compare it with torch."""
    import onnx
    import onnxruntime

    graph = onnx.load(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {INPUT: split.x.numpy().astype(np.float32)})[0]
    model.eval()
    expected = model(split.x).numpy()
    labels = split.y.numpy()
    return {
        "file_bytes": path.stat().st_size,
        "opset": graph.opset_import[0].version,
        "operators": sorted({node.op_type for node in graph.graph.node}),
        "onnxruntime": onnxruntime.__version__,
        "samples": len(labels),
        "max_abs_diff": float(np.abs(got - expected).max()),
        "argmax_agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
        "test_accuracy_onnx": float((got.argmax(1) == labels).mean()),
        "test_accuracy_torch": float((expected.argmax(1) == labels).mean()),
    }
