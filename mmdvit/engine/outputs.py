"""``tools/test.py --out``, written so that no run leaves a torn file or a folder that mixes
two runs (metrics registered in :data:`mmdvit.registry.METRICS`).

- Segmentation, ``--out DIR``: :class:`SegPredictionWriter` writes each predicted label map
  atomically into a hidden staging folder next to ``DIR`` (``.<DIR name>.partial``) and renames
  it to ``DIR`` when the whole dataset has been predicted. A killed run leaves no ``DIR``
  (only the staging folder, which the next run with the same ``--out`` reuses and clears of
  files it does not write); an existing non-empty ``DIR`` is refused before the run
  (:func:`check_out_folder`).
- Detection / classification, ``--out FILE.pkl``: :class:`AtomicDumpDetResults` /
  :class:`AtomicDumpResults` are mmdet's / mmengine's dump metrics writing the file through
  :func:`~mmdvit.models.checkpoint.write_atomic`: it holds its old content or the complete new
  one.
"""
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from mmdet.evaluation.metrics import DumpDetResults
from mmengine.evaluator import BaseMetric, DumpResults
from mmengine.fileio import dump
from mmengine.logging import print_log
from PIL import Image

from ..models.checkpoint import write_atomic
from ..registry import METRICS


def staging_folder(out_dir: str) -> str:
    """Where :class:`SegPredictionWriter` writes before ``out_dir`` is complete: the hidden
    sibling ``.<name>.partial``."""
    out_dir = osp.abspath(osp.expanduser(out_dir))
    return osp.join(osp.dirname(out_dir), f'.{osp.basename(out_dir)}.partial')


def check_out_folder(out_dir: str) -> None:
    """``--out DIR`` for predictions must be new or an empty folder, so that the predictions of
    two runs never mix.

    Raises:
        ValueError: naming the path, what is there and the fix.
    """
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise ValueError(f'--out {out_dir!r} is a file; segmentation predictions go to a folder: '
                         'give the path of a new folder.')
    if osp.isdir(out_dir) and os.listdir(out_dir):
        raise ValueError(f'--out {out_dir!r} already holds {len(os.listdir(out_dir))} files (an '
                         'earlier run?): predictions go to a new or empty folder, so that two '
                         'runs never mix. Remove or empty it, or give another folder.')


@METRICS.register_module()
class SegPredictionWriter(BaseMetric):
    """The predicted label maps of a segmentation run as PNG files, as mmseg's
    ``IoUMetric(output_dir=...)`` writes them (``<image name>.png``, uint8 class ids, plus 1
    when the dataset has ``reduce_zero_label``), each written atomically into
    :func:`staging_folder`; the folder becomes ``out_dir`` when every image has been predicted
    (renamed by the main process once all processes have written). Computes no metric.

    Args:
        out_dir: the folder the predictions end up in (new or empty).
    """

    default_prefix = 'out'

    def __init__(self, out_dir: str, collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.out_dir = osp.abspath(osp.expanduser(out_dir))
        self.staging = staging_folder(out_dir)
        os.makedirs(self.staging, exist_ok=True)

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            name = osp.splitext(osp.basename(sample['img_path']))[0] + '.png'
            mask = sample['pred_sem_seg']['data'].squeeze().cpu().numpy()
            if sample.get('reduce_zero_label', False):
                mask = mask + 1
            image = Image.fromarray(mask.astype(np.uint8))
            write_atomic(osp.join(self.staging, name), lambda f: image.save(f, format='PNG'))
            self.results.append(name)

    def compute_metrics(self, results: List[str]) -> Dict[str, float]:
        written = set(results)
        for name in os.listdir(self.staging):  # left by a killed run with the same --out
            if name not in written:
                os.remove(osp.join(self.staging, name))
        if osp.isdir(self.out_dir):
            os.rmdir(self.out_dir)  # empty (check_out_folder); fails if something came since
        os.rename(self.staging, self.out_dir)
        print_log(f'{len(written)} predicted label maps written to {self.out_dir}',
                  logger='current')
        return {}


class _AtomicDump:
    """``compute_metrics`` of mmengine's ``DumpResults`` with the pickle file written
    atomically."""

    out_file_path: str

    def compute_metrics(self, results: list) -> dict:
        write_atomic(self.out_file_path, lambda f: dump(results, f, file_format='pkl'))
        print_log(f'Results has been saved to {self.out_file_path}.', logger='current')
        return {}


@METRICS.register_module()
class AtomicDumpResults(_AtomicDump, DumpResults):
    """mmengine's ``DumpResults`` (classification predictions) written atomically."""


@METRICS.register_module()
class AtomicDumpDetResults(_AtomicDump, DumpDetResults):
    """mmdet's ``DumpDetResults`` (detections, masks as RLE) written atomically."""
