"""What the tools' Runner logs where: per-parameter optimizer messages at DEBUG (hidden at the
default level, shown with log_level='DEBUG'; other messages untouched); the environment, config
and hook dumps in the log file only; on the console mmseg's per-class IoU table with the classes
mIoU counts, in the log file the whole table."""
import io
import logging
from typing import Dict, List, Tuple

import pytest
import torch
from mmengine.logging import MMLogger
from mmseg.evaluation import IoUMetric

from mmdvit.engine.log_filters import (LogFileOnly, present_classes_table, quiet_console,
                                       quiet_per_parameter_logs)


def logged(log_level: str) -> str:
    logger = MMLogger.get_instance(f'per_parameter_{log_level}', log_level=log_level)
    stream = io.StringIO()
    logger.addHandler(logging.StreamHandler(stream))
    logger.handlers[-1].setLevel(log_level)
    quiet_per_parameter_logs(logger)
    quiet_per_parameter_logs(logger)  # installed once
    logger.info('paramwise_options -- backbone.norm0.weight:decay_mult=0.0')
    logger.info('set param backbone.stages.0.0.gamma as id 1')
    logger.info('Param groups = {}')
    logger.info('Epoch(train) [1][1/5]  loss: 1.0')
    logger.warning('paramwise_options -- a warning stays a warning')
    return stream.getvalue()


def test_per_parameter_messages_only_at_debug_level():
    info = logged('INFO')
    assert info.splitlines() == ['Epoch(train) [1][1/5]  loss: 1.0',
                                 'paramwise_options -- a warning stays a warning']
    debug = logged('DEBUG')
    assert 'paramwise_options -- backbone.norm0.weight:decay_mult=0.0' in debug
    assert 'set param backbone.stages.0.0.gamma as id 1' in debug
    assert len(MMLogger.get_instance('per_parameter_INFO').filters) == 1


def quiet_logger(name: str, log_file) -> Tuple[MMLogger, io.StringIO]:
    """An MMLogger with mmengine's console and file handlers, the console writing to a string
    and made quiet by :func:`quiet_console`."""
    logger = MMLogger.get_instance(name, log_file=str(log_file))
    console = io.StringIO()
    [handler] = [h for h in logger.handlers if not isinstance(h, logging.FileHandler)]
    handler.setStream(console)
    quiet_console(logger)
    quiet_console(logger)  # installed once
    return logger, console


def test_dumps_go_to_the_log_file_only(tmp_path):
    logger, console = quiet_logger('dumps', tmp_path / 'run.log')
    logger.info('\n' + '-' * 60 + '\nSystem environment:\n    sys.platform: linux')
    logger.info('Config:\nmodel = dict()')
    logger.info('Hooks will be executed in the following order:\nbefore_run:')
    logger.info('Iter(train) [1/2]  loss: 1.0')
    logger.warning('Config:\na warning stays on the console')
    shown = console.getvalue()
    assert 'Iter(train) [1/2]' in shown and 'a warning stays on the console' in shown
    assert 'System environment' not in shown and 'model = dict()' not in shown
    assert 'before_run' not in shown
    logged = (tmp_path / 'run.log').read_text()
    for text in ('System environment:', 'Config:\nmodel = dict()', 'before_run:',
                 'Iter(train) [1/2]'):
        assert text in logged
    [handler] = [h for h in logger.handlers if not isinstance(h, logging.FileHandler)]
    assert sum(isinstance(f, LogFileOnly) for f in handler.filters) == 1


def table_rows(text: str) -> Dict[str, List[str]]:
    """Class -> its cells, of the per-class table in ``text``."""
    rows = [[c.strip() for c in line.strip()[1:-1].split('|')] for line in text.splitlines()
            if line.startswith('|')]
    return {row[0]: row[1:] for row in rows[1:]}


def test_console_iou_table_shows_the_classes_miou_counts(tmp_path):
    """mmseg's own IoUMetric on 6 classes, of which the data holds 0 and 2 and the prediction
    also 3: the console table has classes 0, 2, 3 (3 with IoU 0: predicted, never right), the
    log file all 6 with nan for the others, and mIoU (mmseg's) averages over those 3."""
    logger, console = quiet_logger('iou', tmp_path / 'run.log')
    classes = ('sky', 'tree', 'road', 'grass', 'person', 'car')
    metric = IoUMetric()
    metric.dataset_meta = dict(classes=classes)
    gt = torch.tensor([[0, 0, 2, 2]])
    pred = torch.tensor([[0, 3, 2, 2]])
    metric.process({}, [dict(pred_sem_seg=dict(data=pred), gt_sem_seg=dict(data=gt))])
    result = metric.compute_metrics(metric.results)
    shown, full = table_rows(console.getvalue()), table_rows((tmp_path / 'run.log').read_text())
    assert list(full) == list(classes)
    assert [full[c][0] for c in ('tree', 'person', 'car')] == ['nan'] * 3
    assert shown == {c: full[c] for c in ('sky', 'road', 'grass')}
    assert shown['grass'][0] == '0.0'
    assert result['mIoU'] == pytest.approx((50.0 + 100.0 + 0.0) / 3, abs=0.01)
    assert ('(3 classes neither in the data nor predicted (IoU nan, not in mIoU) are left out '
            f"here; the full table is in the log file {tmp_path / 'run.log'})"
            in console.getvalue())


def test_tables_without_nan_rows_and_other_messages_are_unchanged():
    table = ('\n+-------+------+\n| Class | IoU  |\n+-------+------+\n|  sky  | 1.0  |\n'
             '+-------+------+')
    assert present_classes_table(table) is None
    assert present_classes_table('Iter(val) [3/3]  mIoU: 1.49') is None
