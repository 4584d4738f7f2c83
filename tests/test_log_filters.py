"""Per-parameter optimizer messages are logged at DEBUG: hidden at the default level (INFO),
shown with log_level='DEBUG'; other messages are untouched."""
import io
import logging

from mmengine.logging import MMLogger

from mmdvit.engine.log_filters import quiet_per_parameter_logs


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
