"""Per-parameter messages of optimizer constructors at DEBUG instead of INFO.

mmengine's ``DefaultOptimWrapperConstructor`` logs one ``paramwise_options -- <param>:<key>=
<value>`` line per parameter and option (130-280 lines for the shipped configs), and mmdet's
layer-decay constructor one ``set param <name> as id <i>`` line per parameter plus the whole
``Param groups = ...`` table. :func:`quiet_per_parameter_logs` lowers them to DEBUG: the default
log level leaves them out, ``--cfg-options log_level=DEBUG`` shows them. mmseg's constructor
prints them instead: :func:`build_optim_wrapper_quietly` sends those to the log at DEBUG too.
"""
import contextlib
import io
import logging

PER_PARAMETER_PREFIXES = ('paramwise_options -- ', 'set param ', 'Param groups = ')


class PerParameterToDebug(logging.Filter):
    """Lower INFO records that start with :data:`PER_PARAMETER_PREFIXES` to DEBUG (the
    logger's handlers then drop them unless they are at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith(PER_PARAMETER_PREFIXES):
            record.levelno, record.levelname = logging.DEBUG, 'DEBUG'
        return True


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
