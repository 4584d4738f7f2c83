"""What the tools' Runner logs where: per-parameter messages at DEBUG, dumps in the log file only.

mmengine's ``DefaultOptimWrapperConstructor`` logs one ``paramwise_options -- <param>:<key>=
<value>`` line per parameter and option (130-280 lines for the shipped configs), and mmdet's
layer-decay constructor one ``set param <name> as id <i>`` line per parameter plus the whole
``Param groups = ...`` table. :func:`quiet_per_parameter_logs` lowers them to DEBUG: the default
log level leaves them out, ``--cfg-options log_level=DEBUG`` shows them. mmseg's constructor
prints them instead: :func:`build_optim_wrapper_quietly` sends those to the log at DEBUG too.

The Runner's logger writes every record to the console and to the work dir's log file
(``<work_dir>/<timestamp>/<timestamp>.log``). On the console (:func:`quiet_console`, installed
by :func:`build_runner` before the Runner logs anything) the environment, the full config and
the hook order (:data:`LOG_FILE_ONLY_PREFIXES`, about 400 lines per run) are left out, and
mmseg's per-class IoU table shows only the classes that occur in the data (IoU not ``nan``);
the log file keeps all of it.
"""
import contextlib
import io
import logging
from typing import List, Optional

from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

PER_PARAMETER_PREFIXES = ('paramwise_options -- ', 'set param ', 'Param groups = ')


class PerParameterToDebug(logging.Filter):
    """Lower INFO records that start with :data:`PER_PARAMETER_PREFIXES` to DEBUG (the
    logger's handlers then drop them unless they are at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith(PER_PARAMETER_PREFIXES):
            record.levelno, record.levelname = logging.DEBUG, 'DEBUG'
        return True


# The Runner's INFO dumps at its start: environment, full config, hook order.
LOG_FILE_ONLY_PREFIXES = ('\n' + '-' * 60 + '\nSystem environment:', 'Config:\n',
                          'Hooks will be executed in the following order:')


def quiet_per_parameter_logs(logger: logging.Logger) -> None:
    """Install :class:`PerParameterToDebug` on ``logger`` (the Runner's logger) once."""
    if not any(isinstance(f, PerParameterToDebug) for f in logger.filters):
        logger.addFilter(PerParameterToDebug())


def build_optim_wrapper_quietly(runner) -> None:
    """Build the Runner's optimizer wrapper now (``runner.train()`` then uses it as built),
    sending what constructors print to stdout to the log at DEBUG instead.

    mmseg's ``LearningRateDecayOptimizerConstructor`` (the ConvNeXt UPerNet configs) reports
    every parameter with ``print_log`` and no logger, i.e. with a bare ``print`` that the
    logger's filter cannot see.
    """
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    for line in printed.getvalue().splitlines():
        runner.logger.debug(line)


class LogFileOnly(logging.Filter):
    """On the console handler: drop the INFO records that start with
    :data:`LOG_FILE_ONLY_PREFIXES` (the log file's handler still writes them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO
                    and str(record.msg).startswith(LOG_FILE_ONLY_PREFIXES))


def _cells(line: str) -> List[str]:
    return [cell.strip() for cell in line.strip()[1:-1].split('|')]


def present_classes_table(message: str, log_file: Optional[str] = None) -> Optional[str]:
    """mmseg's per-class table (``IoUMetric``: a PrettyTable with ``Class`` and ``IoU``
    columns) without the rows whose IoU is ``nan`` (classes neither in the ground truth nor
    predicted, which mIoU does not count), and a line saying how many were left out and where
    the full table is; ``None`` if ``message`` is no such table or no row is left out. The rows
    shown are the classes mIoU averages over."""
    lines = message.split('\n')
    header = next((i for i, line in enumerate(lines)
                   if line.startswith('|') and {'Class', 'IoU'} <= set(_cells(line))), None)
    if header is None:
        return None
    column = _cells(lines[header]).index('IoU')
    kept = [line for line in lines[header + 1:] if not line.startswith('|')
            or _cells(line)[column] != 'nan']
    left_out = len(lines) - header - 1 - len(kept)
    if not left_out:
        return None
    where = f'the log file {log_file}' if log_file else 'the log file'
    return '\n'.join(lines[:header + 1] + kept + [
        f'({left_out} classes neither in the data nor predicted (IoU nan, not in mIoU) are '
        f'left out here; the full table is in {where})'])


class PresentClassesFormatter(logging.Formatter):
    """The console's formatter, showing mmseg's per-class table with the classes that occur
    in the data only (:func:`present_classes_table`); the record itself, which the log file's
    handler formats next, is left as it is."""

    def __init__(self, inner: logging.Formatter, log_file: Optional[str]) -> None:
        super().__init__()
        self.inner, self.log_file = inner, log_file

    def format(self, record: logging.LogRecord) -> str:
        short = present_classes_table(record.getMessage(), self.log_file)
        if short is None:
            return self.inner.format(record)
        copy = logging.makeLogRecord(dict(record.__dict__, msg=short, args=None))
        return self.inner.format(copy)


def _console_handlers(logger: logging.Logger) -> List[logging.Handler]:
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def quiet_console(logger: MMLogger) -> None:
    """Install, once, on the Runner's ``logger``: :class:`PerParameterToDebug`, and on its
    console handler :class:`LogFileOnly` and :class:`PresentClassesFormatter`."""
    quiet_per_parameter_logs(logger)
    for handler in _console_handlers(logger):
        if not any(isinstance(f, LogFileOnly) for f in handler.filters):
            handler.addFilter(LogFileOnly())
        if not isinstance(handler.formatter, PresentClassesFormatter):
            handler.setFormatter(PresentClassesFormatter(
                handler.formatter or logging.Formatter(), getattr(logger, 'log_file', None)))


class QuietConsole:
    """Runner mixin: :func:`quiet_console` on the logger as soon as it is built (the Runner
    logs the environment and config right after)."""

    def build_logger(self, *args, **kwargs) -> MMLogger:
        logger = super().build_logger(*args, **kwargs)  # type: ignore[misc]
        quiet_console(logger)
        return logger


def build_runner(cfg: Config) -> Runner:
    """The Runner of ``cfg`` (its ``runner_type``, else mmengine's ``Runner``) with a quiet
    console (:class:`QuietConsole`); otherwise built exactly as ``Runner.from_cfg`` /
    ``RUNNERS.build`` build it."""
    runner_type = cfg.get('runner_type', 'Runner')
    runner_cls = RUNNERS.get(runner_type) if isinstance(runner_type, str) else runner_type
    if runner_cls is None:
        return RUNNERS.build(cfg)  # mmengine's error for an unknown runner_type
    quiet = type(runner_cls.__name__, (QuietConsole, runner_cls),
                 dict(__module__=runner_cls.__module__, __qualname__=runner_cls.__qualname__))
    return quiet.from_cfg(cfg)
