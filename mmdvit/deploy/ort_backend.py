"""ONNX Runtime as a backend of the benchmark (:mod:`mmdvit.analysis.benchmark`), which takes it
from its caller (``onnx_calls``): the analysis package does not import this one."""
import os
from typing import Any, Callable, Dict

import torch

from ..analysis.benchmark import Subject
from .onnx_export import export_and_verify, ort_session


def onnxruntime_calls(subject: Subject, batch: int, folder: str) -> Dict[str, Callable[[], Any]]:
    """``{model: call}`` running each model of ``subject`` on a batch in ONNX Runtime: each model
    exported at this batch size with :func:`~.onnx_export.export_and_verify` (``verify=False``:
    the export tool and its tests check correctness; with untrained predictors near-tied scores
    may pick other positions in ONNX Runtime, which does not change the cost) into ``folder``
    and run in an ONNX Runtime CPU session with PyTorch's number of threads."""
    calls = {}
    for which, model in subject.models.items():
        image = subject.inputs[which](batch)[0][0].float().cpu().contiguous()
        path = os.path.join(folder, f'{subject.name}_{subject.part}_{which}_b{batch}.onnx')
        export_and_verify(model, path, tuple(image.shape[-2:]), batch, overwrite=True,
                          verify=False, inputs=[image])
        session = ort_session(path, torch.get_num_threads())
        feed = {session.get_inputs()[0].name: image.numpy()}
        calls[which] = (lambda s=session, f=feed: s.run(None, f))
    return calls
