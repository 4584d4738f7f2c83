"""Command-line options about checkpoints that the tools share."""
import argparse
import os

from ..models.checkpoint import TRUST_ENV


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust-checkpoint``: the opt-in to full unpickling (see :func:`apply_trust`)."""
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help='load the checkpoints this command reads with full unpickling (weights_only=False), '
        f'as {TRUST_ENV}=1 does. Only for files you trust: unpickling can run code from the '
        'file. By default checkpoints load with weights_only=True and an allowlist of the '
        'types Runner checkpoints hold, and anything else is refused.')


def apply_trust(args: argparse.Namespace) -> None:
    """Export ``--trust-checkpoint`` as ``MMDVIT_TRUST_CHECKPOINTS=1``, which every checkpoint
    read of this process (and of processes it starts) honours."""
    if args.trust_checkpoint:
        os.environ[TRUST_ENV] = '1'
