"""Artefacts that take a trained model to a target: ONNX (any runtime) and an hls4ml HLS project (FPGAs).

`onnx_export` needs torch, onnx and onnxruntime; `hls_export` also needs hls4ml (the
optional extra `sparsecli[fpga]`). Both are imported by the hardware-map stage only.
"""
