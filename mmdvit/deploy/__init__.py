"""Deployment: ONNX export of mmdvit models with the sparsification inside the graph.

onnx, onnxruntime and onnxscript are optional: they are imported only when a function of this
package needs them (``pip install onnx onnxruntime onnxscript``).
"""
from .onnx_export import (ExportResult, OnnxCheck, OnnxExportError, OnnxMismatchError,
                          export_and_verify, export_onnx, onnx_macs, onnx_op_counts, ort_session,
                          spread_predictor_scores, verify_onnx)

__all__ = [
    'ExportResult', 'OnnxCheck', 'OnnxExportError', 'OnnxMismatchError', 'export_and_verify',
    'export_onnx', 'onnx_macs', 'onnx_op_counts', 'ort_session', 'spread_predictor_scores',
    'verify_onnx'
]
