"""Command-line options about checkpoints that the tools share."""
import argparse

from ..models.checkpoint import TRUST_ENV


def add_trust_argument(parser: argparse.ArgumentParser, which: str) -> None:
    """``--trust-checkpoint``: full unpickling for ``which`` file (the one on the command
    line), and for no other file the tool reads.

    Args:
        which: the file it trusts, in the help's words, e.g. ``'CHECKPOINT'``.
    """
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help=f'load {which} with full unpickling (weights_only=False). Only for a file you '
        'trust: unpickling can run code from the file. It trusts that file only (not a '
        f'teacher, init_cfg or other checkpoint: {TRUST_ENV}=FILE[:FILE...] trusts the files '
        f'listed, {TRUST_ENV}=1 every file). By default checkpoints load with '
        'weights_only=True, narrow factories for the values Runner checkpoints hold, and '
        'their declared sizes checked; anything else is refused.')
