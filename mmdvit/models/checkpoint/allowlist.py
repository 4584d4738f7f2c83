"""What a checkpoint may build besides tensors and Python containers: narrow factories, never
classes.

torch's weights-only unpickler lets a file *call* every global it admits, with arguments of the
file's choosing, and run ``__setstate__`` of every type it admits. Admitting ``numpy.ndarray``
itself would let a file build an object array whose elements are pointers taken from the file.
So mmdvit registers, under the names mmengine Runner checkpoints (and the OpenMMLab zoo files
written by them) use, functions that build only what those files hold and check every argument:

- numpy dtypes, arrays and scalars: plain numeric types only (bool, int8-64, uint8-64, float16-64;
  no object, void, structured or sub-array dtype), array data exactly the bytes its shape and
  dtype need (never a ``buffer=`` or a list of objects);
- mmengine's ``HistoryBuffer`` (message-hub scalars): 1-D numeric histories of equal length and
  the default statistics methods, nothing else;
- ``getattr``: only ``HistoryBuffer.min`` / ``max`` / ``current`` / ``mean``;
- ``bytes``: only ``bytes()`` (the data of an empty array).

A pickle builds dtypes, arrays and history buffers in two steps (a call, then ``BUILD`` with the
state): the calls return placeholders that check the state they are given, and
:func:`materialise` replaces them by the real objects once the file is read. Placeholders are
unhashable, so they can only sit where the real objects can (dict values, list and tuple items).
"""
import math
import pickle
from collections import OrderedDict
from typing import Any, Dict, List, Tuple

import numpy as np
from mmengine.logging import HistoryBuffer

HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
NUMERIC_DTYPES = ('b1', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', 'f2', 'f4', 'f8')
BYTE_ORDERS = ('<', '>', '|', '=')
MAX_NDIM = 32
_TOKEN = object()  # only this module can make placeholders: a file cannot name this object


class RefusedCall(pickle.UnpicklingError):
    """A checkpoint calls an admitted global with arguments mmdvit does not build."""


def refuse(what: str) -> RefusedCall:
    """The error for ``what`` a file asked for and mmdvit does not build."""
    return RefusedCall(f'{what} is not allowed')


def _check_token(cls: type, args: tuple) -> None:
    if not args or args[0] is not _TOKEN:
        raise refuse(f'{cls.__name__}(...) called from the file')


class Inert:
    """An object mmdvit puts where a file's pickle asks for something: it runs nothing, and its
    ``repr`` (in error messages) says what it stands for."""
    __slots__ = ()


class Placeholder(Inert):
    """Something a pickle finishes with ``BUILD``; :meth:`value` builds the real object."""
    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]

    def value(self) -> Any:
        raise NotImplementedError


class NumpyDtype(Placeholder):
    """A numeric numpy dtype; ``BUILD`` may set only its byte order."""
    __slots__ = ('dtype', )

    def __new__(cls, *args: Any) -> 'NumpyDtype':
        _check_token(cls, args)
        return super().__new__(cls)

    def __init__(self, token: object, dtype: np.dtype) -> None:
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        plain = (None, None, None, -1, -1, 0)
        if not (type(state) is tuple and len(state) == 8 and type(state[0]) is int
                and state[0] == 3 and type(state[1]) is str and state[1] in BYTE_ORDERS
                and all(type(a) is type(b) and a == b for a, b in zip(state[2:], plain))):
            raise refuse(f'numpy dtype state {describe(state)} (only the byte order of a plain '
                         'numeric dtype)')
        ordered = self.dtype.newbyteorder(state[1]) if state[1] in '<>' else self.dtype
        if ordered != self.dtype:  # keep the native dtype itself when the order is native
            self.dtype = ordered

    def value(self) -> np.dtype:
        return self.dtype

    def __repr__(self) -> str:
        return repr(self.dtype)


class NumpyArray(Placeholder):
    """A numeric numpy array: ``BUILD`` gives (1, shape, dtype, fortran order, raw bytes)."""
    __slots__ = ('state', )

    def __new__(cls, *args: Any) -> 'NumpyArray':
        _check_token(cls, args)
        return super().__new__(cls)

    def __init__(self, token: object) -> None:
        self.state = None

    def __setstate__(self, state: Any) -> None:
        if not (type(state) is tuple and len(state) == 5 and type(state[0]) is int
                and state[0] == 1):
            raise refuse(f'numpy array state {describe(state)}')
        _, shape, dtype, fortran, raw = state
        shape = _shape(shape)
        if type(dtype) is not NumpyDtype or type(fortran) is not bool:
            raise refuse(f'numpy array of dtype {describe(dtype)} (only plain numeric dtypes)')
        if type(raw) is not bytes or len(raw) != math.prod(shape) * dtype.dtype.itemsize:
            raise refuse(f'numpy array data of {describe(raw)} for shape {shape} and dtype '
                         f'{dtype.dtype} (it must be exactly the bytes they need)')
        self.state = (shape, dtype.dtype, fortran, raw)

    @property
    def shape(self) -> Tuple[int, ...]:
        return self._built()[0]

    def _built(self) -> Tuple[Tuple[int, ...], np.dtype, bool, bytes]:
        if self.state is None:
            raise refuse('a numpy array without data')
        return self.state

    def __repr__(self) -> str:
        return 'numpy array'

    def value(self) -> np.ndarray:
        shape, dtype, fortran, raw = self._built()
        order = 'F' if fortran else 'C'  # numpy's own unpickling gives native byte order
        return np.frombuffer(raw, dtype).reshape(shape, order=order).astype(
            dtype.newbyteorder('='), order=order)


class HistoryBufferState(Placeholder):
    """mmengine's ``HistoryBuffer``, registered under its name: ``BUILD`` gives its
    ``__dict__`` (histories, ``max_length`` and the statistics methods)."""
    __slots__ = ('state', )

    def __new__(cls, *args: Any) -> 'HistoryBufferState':
        if args:
            raise refuse(f'HistoryBuffer called with {describe(args)}')
        self = super().__new__(cls)
        self.state = None  # NEWOBJ makes it without __init__
        return self

    def __init__(self) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        keys = {'max_length', '_log_history', '_count_history'}
        if not (type(state) is dict and keys <= set(state) <= keys | {'statistics_methods'}):
            raise refuse(f'HistoryBuffer state {describe(state)}')
        methods = state.get('statistics_methods', {})
        default = {name: getattr(HistoryBuffer, name) for name in HISTORY_BUFFER_STATISTICS}
        if type(methods) is not dict or any(
                type(k) is not str or default.get(k) is not v for k, v in methods.items()):
            raise refuse(f'HistoryBuffer statistics methods {describe(methods)} (only '
                         f'{", ".join(HISTORY_BUFFER_STATISTICS)})')
        log, count, max_length = (state[k] for k in ('_log_history', '_count_history',
                                                     'max_length'))
        if (type(log) is not NumpyArray or type(count) is not NumpyArray
                or len(log.shape) != 1 or log.shape != count.shape
                or type(max_length) is not int or max_length < 1):
            raise refuse('HistoryBuffer histories that are not two 1-D numeric arrays of '
                         'equal length with an integer max_length')
        self.state = (log, count, max_length)

    def __repr__(self) -> str:
        return 'HistoryBuffer'

    def value(self) -> HistoryBuffer:
        if self.state is None:
            raise refuse('a HistoryBuffer without state')
        log, count, max_length = self.state
        return HistoryBuffer(log.value(), count.value(), max_length)


def _shape(shape: Any) -> Tuple[int, ...]:
    if (type(shape) is not tuple or len(shape) > MAX_NDIM
            or any(type(n) is not int or n < 0 for n in shape)):
        raise refuse(f'numpy array shape {describe(shape)}')
    return shape


def describe(obj: Any) -> str:
    """What a file passed, in a few characters (it can be large)."""
    if type(obj) in (int, float, bool, str, bytes, type(None)):
        text = repr(obj)
        return text if len(text) <= 40 else text[:37] + '...'
    if type(obj) in (tuple, list, dict):
        return f'<{type(obj).__name__} of {len(obj)}>'
    if isinstance(obj, Inert):
        return repr(obj)
    if id(obj) in GLOBAL_NAMES:  # a global of the file, by the name the file gave it
        return GLOBAL_NAMES[id(obj)]
    return f'<{type(obj).__module__}.{type(obj).__qualname__}>'


def numpy_dtype(spec: Any, align: Any = False, copy: Any = True) -> NumpyDtype:
    """``numpy.dtype(spec, align, copy)`` for the plain numeric types only."""
    if (type(spec) is not str or spec not in NUMERIC_DTYPES or type(align) not in (bool, int)
            or align or type(copy) not in (bool, int)):
        raise refuse(f'numpy.dtype({describe(spec)}, ...) (only {", ".join(NUMERIC_DTYPES)})')
    return NumpyDtype(_TOKEN, np.dtype(spec))


def numpy_ndarray(*args: Any, **kwargs: Any) -> None:
    """``numpy.ndarray`` is only a marker passed to :func:`numpy_reconstruct`: never built."""
    raise refuse('numpy.ndarray(...) (arrays are only rebuilt from their data)')


def numpy_reconstruct(subtype: Any, shape: Any, typecode: Any) -> NumpyArray:
    """``numpy._core.multiarray._reconstruct(ndarray, (0,), b'b')``: an empty array that
    ``BUILD`` fills (see :class:`NumpyArray`)."""
    if not (subtype is numpy_ndarray and type(shape) is tuple and shape == (0, )
            and type(typecode) is bytes and typecode == b'b'):
        raise refuse(f'numpy _reconstruct({describe(subtype)}, {describe(shape)}, '
                     f'{describe(typecode)}) (only plain ndarrays)')
    return NumpyArray(_TOKEN)


def numpy_scalar(dtype: Any, raw: Any = None) -> np.generic:
    """``numpy._core.multiarray.scalar(dtype, raw)``: a numeric scalar from its bytes."""
    if type(dtype) is not NumpyDtype or type(raw) is not bytes or len(raw) != dtype.dtype.itemsize:
        raise refuse(f'numpy scalar({describe(dtype)}, {describe(raw)}) (only the bytes of a '
                     'plain numeric value)')
    return np.frombuffer(raw, dtype.dtype)[0]


def empty_bytes(*args: Any) -> bytes:
    """``bytes()``: how protocol-2 pickles write ``b''`` (the data of an empty array)."""
    if args:
        raise refuse(f'bytes called with {describe(args)} (only bytes())')
    return b''


def history_buffer_method(owner: Any, name: Any) -> Any:
    """``getattr`` as a Runner checkpoint uses it, and nothing else: ``HistoryBuffer``
    pickles its statistics methods as ``getattr(HistoryBuffer, name)``. A general ``getattr``
    would let a file reach any attribute of any object it builds."""
    if owner is HistoryBufferState and type(name) is str and name in HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise refuse(f'getattr({describe(owner)}, {describe(name)}) (only HistoryBuffer.'
                 f'{{{",".join(HISTORY_BUFFER_STATISTICS)}}})')


# name in the pickle -> what it builds. numpy >= 2 pickles as ``numpy._core``, files written
# with numpy 1.x name ``numpy.core``.
NARROW_GLOBALS: Dict[str, Any] = {
    'numpy.dtype': numpy_dtype,
    'numpy.ndarray': numpy_ndarray,
    'numpy._core.multiarray._reconstruct': numpy_reconstruct,
    'numpy.core.multiarray._reconstruct': numpy_reconstruct,
    'numpy._core.multiarray.scalar': numpy_scalar,
    'numpy.core.multiarray.scalar': numpy_scalar,
    'mmengine.logging.history_buffer.HistoryBuffer': HistoryBufferState,
    'builtins.getattr': history_buffer_method,
    'builtins.bytes': empty_bytes,
}
PLACEHOLDERS = (NumpyDtype, NumpyArray, HistoryBufferState)
# id -> pickle name of what the admitted globals evaluate to (for messages)
GLOBAL_NAMES: Dict[int, str] = {}


def name_globals(admitted: Dict[str, Any]) -> None:
    """Let messages call what ``admitted`` (pickle name -> object) holds by its pickle name."""
    for name, obj in admitted.items():
        GLOBAL_NAMES.setdefault(id(obj), name)


name_globals(NARROW_GLOBALS)


def safe_globals() -> List[Any]:
    """The allowlist for ``torch.serialization.safe_globals``: the narrow factories under the
    names the pickles use, and the placeholder types (which ``BUILD`` needs; they refuse to be
    made by a file)."""
    return [(obj, name) for name, obj in NARROW_GLOBALS.items()] + [
        cls for cls in PLACEHOLDERS if cls is not HistoryBufferState]


def materialise(obj: Any) -> Any:
    """Replace every placeholder in what a file unpickled to by its real object (in place in
    dicts and lists, tuples rebuilt); returns the result."""
    done: Dict[int, Tuple[Any, Any]] = {}  # id -> (node, kept alive so ids stay unique; result)

    def walk(node: Any) -> Any:
        if id(node) in done:
            return done[id(node)][1]
        done[id(node)] = (node, node)  # a cycle back to a node being walked keeps the node
        if isinstance(node, Placeholder):
            done[id(node)] = (node, node.value())
        elif type(node) in (dict, OrderedDict):
            for key, item in node.items():
                node[key] = walk(item)
        elif type(node) is list:
            node[:] = [walk(item) for item in node]
        elif type(node) is tuple:
            done[id(node)] = (node, tuple(walk(item) for item in node))
        return done[id(node)][1]

    return walk(obj)
