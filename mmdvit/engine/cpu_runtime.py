"""Runs on a machine without CUDA, which mmengine 0.10.7 cannot start by itself.

- Multi-process (torchrun): mmengine's ``init_dist('pytorch')`` calls ``torch.cuda.set_device``
  unconditionally and its default DDP wrapper passes ``device_ids=[local_rank]``, which DDP
  rejects for a CPU module. :func:`prepare_cpu_run` initialises a ``gloo`` process group from
  torchrun's environment (the Runner then skips ``init_dist``) and sets a DDP wrapper config
  without device ids. SyncBN has no CPU kernel: it becomes BN (as mmengine already does for
  single-process runs).
- ``AmpOptimWrapper`` asserts a GPU: on CPU the run trains in float32 with ``OptimWrapper``.

- At exit, :func:`close_process_group` waits for every rank and destroys the process group:
  a gloo group left to the interpreter's teardown can abort a rank after a finished run.

With CUDA nothing changes: mmengine initialises NCCL and AMP as configured.
"""
from typing import Any, List

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log

SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')


def _sync_bn_to_bn(node: Any) -> int:
    """Replace SyncBN norm configs by BN in place; returns how many were replaced."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') in SYNC_BN_TYPES:
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _sync_bn_to_bn(value)
    return count


def _init_gloo(cfg: Config, launcher: str) -> List[str]:
    if launcher != 'pytorch':
        raise ValueError(f'launcher {launcher!r} needs CUDA; on a CPU-only machine start the '
                         'processes with torchrun (tools/dist_train.sh, --launcher pytorch).')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    notes = [f'gloo process group (rank {dist.get_rank()} of {dist.get_world_size()}), '
             'DDP without device ids']
    replaced = _sync_bn_to_bn(cfg.model)
    if replaced:
        notes.append(f'{replaced} SyncBN configs replaced by BN (SyncBN needs CUDA)')
    return notes


def prepare_cpu_run(cfg: Config, launcher: str) -> bool:
    """Adapt ``cfg`` (in place) to a machine without CUDA; returns whether it changed anything.

    Raises:
        ValueError: for a multi-process launcher other than ``'pytorch'`` (torchrun).
    """
    if torch.cuda.is_available():
        return False
    notes = _init_gloo(cfg, launcher) if launcher != 'none' else []
    optim_wrapper = cfg.get('optim_wrapper')
    if isinstance(optim_wrapper, dict) and optim_wrapper.get('type') == 'AmpOptimWrapper':
        optim_wrapper['type'] = 'OptimWrapper'
        for key in ('loss_scale', 'dtype', 'use_fsdp'):
            optim_wrapper.pop(key, None)
        notes.append('AmpOptimWrapper needs a GPU: training in float32 with OptimWrapper')
    if notes:
        print_log('No CUDA: ' + '; '.join(notes), logger='current')
    return bool(notes)


def close_process_group() -> None:
    """Wait for every rank, then destroy the default process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
