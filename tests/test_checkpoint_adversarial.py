"""Hostile checkpoints against the safe reader: every global it admits called with hostile
arguments, what torch alone would admit (``bytearray(n)``, ``torch.Tensor(n)``, chained
``_codecs.encode``), and files that declare more memory than they hold (storages larger than
their records, compressed entries). Each file is refused with a named error, in a subprocess
whose address space is capped a few hundred MB above what the imports use: the interpreter
survives (exit status 0), and no refusal allocates what the file asks for."""
import copyreg
import os
import pickle
import re
import subprocess
import sys
import zipfile
from _codecs import encode as codecs_encode
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
from helpers import Reduce
from mmengine.logging import HistoryBuffer

from mmdvit.models.checkpoint.allowlist import NumpyArray, NumpyDtype
from mmdvit.models.checkpoint.prescan import ADMITTED

ROOT = Path(__file__).resolve().parents[1]
HEADROOM = 384 << 20  # bytes of address space the loads may use beyond the imports
NUMPY_2 = b'numpy._core.multiarray'
NUMPY_1 = b'numpy.core.multiarray'
UNSAFE = r'UnsafeCheckpointError: refusing to load the resume checkpoint {path!r}: '
NEEDS = UNSAFE + r'it needs {name}, which mmdvit does not load'
SIZE = r'CheckpointError: refusing to load the resume checkpoint {path!r}: '

LOADER = r'''
import copy, resource, sys
from mmdvit.models.checkpoint import CheckpointError, load_checkpoint_file
size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[1]), resource.RLIM_INFINITY))
for path in sys.argv[2:]:
    try:
        checkpoint = load_checkpoint_file(path, 'resume checkpoint')
    except CheckpointError as err:
        print(f'{type(err).__name__}: {err}'.replace('\n', ' '), flush=True)
    else:
        copy.deepcopy(checkpoint)
        print(f'LOADED {path}: {checkpoint!r:.200}', flush=True)
'''


class Stub:
    """Pickles as ``NEWOBJ Stub(*args)``: :func:`renamed` then gives the class another name."""

    def __init__(self, *args) -> None:
        self.args = args

    def __reduce__(self):
        return copyreg.__newobj__, (Stub, ) + self.args


def renamed(src: Path, dst: Path, old: bytes, new: bytes) -> Path:
    """``src`` with ``old`` replaced by ``new`` in its pickle (e.g. module names)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w') as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith('data.pkl'):
                assert old in data
                data = data.replace(old, new)
            zout.writestr(info, data)
    return dst


def declaring(path: Path, numel: int, record_bytes: int, compress: bool) -> Path:
    """A checkpoint of one float tensor that declares ``numel`` elements (its storage and its
    size) while its record holds ``record_bytes`` zeros, stored or deflated (written in 1 MiB
    pieces)."""
    tmp = path.with_suffix('.tmp')
    torch.save({'w': torch.zeros(12345)}, tmp)  # BININT2 12345 = b'M90'
    with zipfile.ZipFile(tmp) as zin, zipfile.ZipFile(path, 'w') as zout:
        for info in zin.infolist():
            if info.filename.endswith('data/0'):
                continue
            data = zin.read(info.filename)
            if info.filename.endswith('data.pkl'):
                assert data.count(b'M90') == 2  # the storage's numel, the tensor's size
                long = pickle.encode_long(numel)
                data = data.replace(b'M90', pickle.LONG1 + bytes([len(long)]) + long)
            zout.writestr(info, data)
        record = zipfile.ZipInfo(f'{tmp.stem}/data/0')
        record.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        with zout.open(record, 'w', force_zip64=True) as f:
            for start in range(0, record_bytes, 1 << 20):
                f.write(bytes(min(1 << 20, record_bytes - start)))
    tmp.unlink()
    return path


def hostile_objects() -> Dict[str, Tuple[object, str]]:
    """name -> (what the file holds as its message hub, the expected refusal)."""
    storage = torch.zeros(4).storage()  # typed: pickled as torch.FloatStorage
    hooks = OrderedDict([('hook', Reduce(OrderedDict, ()))])
    stats = {'max_length': 5, '_log_history': np.zeros(1), '_count_history': np.zeros(1)}
    return {
        # numpy.ndarray: the file, as a call and as NEWOBJ
        'ndarray_object_buffer': (Reduce(np.ndarray, ((1, ), 'O', b'\x01' * 8)),
                                  UNSAFE + r'numpy\.ndarray\(\.\.\.\) .* is not allowed'),
        'ndarray_newobj': (Stub((1, ), 'O'), UNSAFE + r'creating numpy\.ndarray is not allowed'),
        # numpy.dtype: object / void / structured dtypes, a state that adds fields
        'dtype_object': (Reduce(np.dtype, ('O', False, True)),
                         UNSAFE + r"numpy\.dtype\('O', \.\.\.\) \(only b1, .*f8\) is not allowed"),
        'dtype_void': (Reduce(np.dtype, ('V8', False, True)), UNSAFE + r"numpy\.dtype\('V8'"),
        'dtype_fields': (Reduce(np.dtype, ('f8', False, True),
                                (3, '<', None, ('a', 'b'), None, 16, 1, 0)),
                         UNSAFE + r'numpy dtype state <tuple of 8> \(only the byte order'),
        'dtype_aligned': (Reduce(np.dtype, ('f8', True, True)), UNSAFE + r"numpy\.dtype\('f8'"),
        # numpy _reconstruct + BUILD: object data, too little data, another type
        'array_object_data': (Reduce(np._core.multiarray._reconstruct, (np.ndarray, (0, ), b'b'),
                                     (1, (1, ), np.dtype('f8'), False, [1])),
                              UNSAFE + r'numpy array data of <list of 1> for shape \(1,\)'),
        'array_huge_shape': (Reduce(np._core.multiarray._reconstruct, (np.ndarray, (0, ), b'b'),
                                    (1, (1 << 40, ), np.dtype('f8'), False, b'\0' * 8)),
                             UNSAFE + r'numpy array data of .* for shape \(1099511627776,\)'),
        'array_other_type': (Reduce(np._core.multiarray._reconstruct, (OrderedDict, (0, ), b'b')),
                             UNSAFE + r'numpy _reconstruct\(collections\.OrderedDict, '),
        'array_negative_shape': (Reduce(np._core.multiarray._reconstruct,
                                        (np.ndarray, (0, ), b'b'),
                                        (1, (-1, ), np.dtype('f8'), False, b'')),
                                 UNSAFE + r'numpy array shape <tuple of 1> is not allowed'),
        'bytes_sized': (Reduce(bytes, (1 << 34, )),
                        UNSAFE + r'bytes called with <tuple of 1> \(only bytes\(\)\)'),
        # numpy scalar: too few bytes, an object
        'scalar_short': (Reduce(np._core.multiarray.scalar, (np.dtype('f8'), b'\0')),
                         UNSAFE + r"numpy scalar\(dtype\('float64'\), b'\\x00'\)"),
        'scalar_object': (Reduce(np._core.multiarray.scalar, (np.dtype('O'), [1])),
                          UNSAFE + r"numpy\.dtype\('O8', \.\.\.\)"),
        # mmdvit's placeholders by name, and HistoryBuffer
        'placeholder_by_name': (Reduce(NumpyArray, ()),
                                NEEDS.replace('{name}', r'mmdvit\.models\.checkpoint\.allowlist\.'
                                              r'NumpyArray')),
        'dtype_placeholder_by_name': (Reduce(NumpyDtype, ()),
                                      NEEDS.replace('{name}', r'.*allowlist\.NumpyDtype')),
        'history_buffer_args': (Reduce(HistoryBuffer, ([1.0], [1])),
                                UNSAFE + r'HistoryBuffer called with <tuple of 2>'),
        'history_buffer_methods': (Reduce(HistoryBuffer, (), dict(
            stats, statistics_methods={'mean': np.ndarray})),
                                   UNSAFE + r'HistoryBuffer statistics methods <dict of 1>'),
        'history_buffer_lengths': (Reduce(HistoryBuffer, (), dict(stats, _count_history=np.zeros(
            2))), UNSAFE + r'HistoryBuffer histories that are not two 1-D numeric arrays'),
        'history_buffer_unbuilt': (Reduce(HistoryBuffer, ()),
                                   UNSAFE + r'a HistoryBuffer without state is not allowed'),
        'getattr_other': (Reduce(getattr, (HistoryBuffer, '__init__')),
                          UNSAFE + r"getattr\(mmengine\.logging\.history_buffer\.HistoryBuffer, "
                          r"'__init__'\)"),
        'getattr_result_called': (Reduce(Reduce(getattr, (HistoryBuffer, 'mean')), ([1], )),
                                  UNSAFE + r'calling <builtins\.function> is not allowed'),
        # torch's globals that mmdvit admits
        'ordered_dict_items': (Reduce(OrderedDict, ([(1, 2)], )),
                               UNSAFE + r'OrderedDict called with <tuple of 1>'),
        'counter_of_a_string': (Reduce(Counter, ('x' * 64, )),
                                UNSAFE + r'Counter called with <tuple of 1> \(only a dict of '
                                r'numbers\)'),
        'counter_of_objects': (Reduce(Counter, ({'a': [1]}, )),
                               UNSAFE + r'Counter called with <tuple of 1>'),
        'encode_hex': (Reduce(codecs_encode, ('x' * 64, 'hex')),
                             UNSAFE + r"_codecs\.encode\('x+\.\.\., 'hex'\)"),
        'tensor_past_storage': (Reduce(torch._utils._rebuild_tensor_v2,
                                       (storage, 0, (1 << 31, ), (1, ), False, OrderedDict())),
                                UNSAFE + r'a tensor of size \(2147483648,\) .* past its storage '
                                r'of 4 elements'),
        'tensor_negative_stride': (Reduce(torch._utils._rebuild_tensor_v2,
                                          (storage, 0, (2, ), (-1, ), False, OrderedDict())),
                                   UNSAFE + r'_rebuild_tensor_v2\(storage of 4 elements'),
        'parameter_hooks': (Reduce(torch._utils._rebuild_parameter,
                                   (torch.zeros(2), False, hooks)),
                            UNSAFE + r'_rebuild_parameter\(\.\.\.\) \(only a plain tensor'),
        'storage_type_called': (Reduce(torch.FloatStorage, (1 << 34, )),
                                UNSAFE + r'calling torch\.FloatStorage is not allowed'),
        # what torch alone admits and mmdvit does not: each asks for 16 GiB
        'bytearray': (Reduce(bytearray, (1 << 34, )),
                      NEEDS.replace('{name}', r'builtins\.bytearray')),
        'tensor_called': (Reduce(torch.Tensor, (1 << 32, )),
                          NEEDS.replace('{name}', r'torch\.Tensor')),
        'untyped_storage_called': (Reduce(torch.UntypedStorage, (1 << 34, )),
                                   NEEDS.replace('{name}', r'torch\.storage\.UntypedStorage')),
    }


def hostile_files(folder: Path) -> Dict[Path, str]:
    """path -> regex its refusal must match."""
    files = {}
    for name, (obj, expected) in hostile_objects().items():
        path = folder / f'{name}.pth'
        torch.save({'meta': {'iter': 1}, 'message_hub': {'log_scalars': {'x': obj}}}, path)
        files[path] = expected
    # the numpy 1.x names of _reconstruct and scalar, with the same hostile calls
    for name in ('array_object_data', 'scalar_short'):
        old = renamed(folder / f'{name}.pth', folder / f'{name}_numpy1.pth', NUMPY_2, NUMPY_1)
        files[old] = files[folder / f'{name}.pth']
    stub = folder / 'ndarray_newobj.pth'
    files[renamed(stub, folder / 'ndarray_newobj_renamed.pth', f'c{__name__}\nStub\n'.encode(),
                  b'cnumpy\nndarray\n')] = files.pop(stub)
    files[declaring(folder / 'declared_16GiB.pth', 1 << 32, 8, compress=False)] = (
        SIZE + r"storage '0' declares 17179869184 bytes but its record holds 8")
    files[declaring(folder / 'compressed.pth', 1 << 26, 1 << 28, compress=True)] = (
        SIZE + r"its entry 'compressed/data/0' is compressed \(\d+ bytes that inflate to "
        r'268435456\)')
    return files


def test_hostile_files_are_refused_by_name_and_the_interpreter_survives(tmp_path):
    files = hostile_files(tmp_path)
    assert all(os.path.getsize(p) < (3 << 20) for p in files)
    assert {name for name in ADMITTED if not name.startswith('torch.') or 'Storage' not in name
            } <= {'numpy.dtype', 'numpy.ndarray', 'numpy._core.multiarray._reconstruct',
                  'numpy.core.multiarray._reconstruct', 'numpy._core.multiarray.scalar',
                  'numpy.core.multiarray.scalar', 'mmengine.logging.history_buffer.HistoryBuffer',
                  'builtins.getattr', 'builtins.bytes', 'collections.OrderedDict',
                  'collections.Counter',
                  '_codecs.encode',
                  'torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_parameter'}
    env = dict(os.environ, OMP_NUM_THREADS='1', MALLOC_ARENA_MAX='2', PYTHONWARNINGS='ignore',
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, '-c', LOADER, str(HEADROOM)] + [str(p) for p in files],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == len(files), proc.stdout
    for line, (path, expected) in zip(lines, files.items()):
        assert re.match(expected.replace('{path!r}', re.escape(repr(str(path)))), line), (
            path.name, line)
