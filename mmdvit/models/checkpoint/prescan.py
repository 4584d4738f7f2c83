"""Check a checkpoint file before ``torch.load`` allocates anything for it.

``torch.load`` allocates each storage the pickle declares, reads compressed zip entries inflated,
and its weights-only unpickler admits calls such as ``bytearray(n)``, ``torch.Tensor(n)`` or
chained ``_codecs.encode`` that ask for memory out of proportion to the file. :func:`prescan`
reads only the zip directory and the pickle, and evaluates the pickle with the rules of torch's
weights-only unpickler, but with nothing real behind the torch globals (storages and tensors are
stand-ins that record their declared sizes) and only the globals Runner checkpoints use admitted
(:data:`ADMITTED`). It refuses

- a file that is not a zip (PyTorch's legacy format is not read without trust), a compressed or
  duplicated entry, a pickle larger than :data:`MAX_PICKLE_BYTES`;
- a global outside :data:`ADMITTED`, or an admitted one called with arguments mmdvit does not
  build (:mod:`.allowlist`);
- declared storages whose sizes differ from their records or add up to more than the file.

Memory use is then bounded by a small multiple of the file's size.
"""
import io
import math
import pickle
import pickletools
import zipfile
from collections import Counter, OrderedDict
from typing import Any, BinaryIO, Callable, Dict, List, Tuple

import torch
from torch._utils import IMPORT_MAPPING, NAME_MAPPING  # the renames torch's unpickler applies

from .allowlist import (NARROW_GLOBALS, PLACEHOLDERS, Inert, RefusedCall, describe,
                        name_globals, refuse)

MAX_PICKLE_BYTES = 1 << 30
ZIP_MAGIC = b'PK\x03\x04'


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names globals outside :data:`ADMITTED`."""

    def __init__(self, names: List[str]) -> None:
        super().__init__(', '.join(names))
        self.names = names


class MalformedCheckpoint(ValueError):
    """Not a readable PyTorch zip checkpoint (corrupt, legacy format, inconsistent sizes)."""


class DeclaredSizeError(MalformedCheckpoint):
    """The file declares more data than it holds, or holds it compressed."""


class StandIn(Inert):
    """What the pre-pass puts where ``torch.load`` would put a storage, a tensor or a storage
    type: it records sizes, and a file can neither call nor ``BUILD`` it."""
    __slots__ = ('size', )

    def __init__(self, size: int) -> None:
        self.size = size

    def __setstate__(self, state: Any) -> None:
        raise refuse(f'BUILD on a {self!r}')

    def __repr__(self) -> str:
        return f'{type(self).__name__.lower()} of {self.size} elements'


class StorageType(StandIn):
    """``torch.FloatStorage`` & co.; ``size``: bytes per element."""
    __slots__ = ('name', )

    def __init__(self, name: str, size: int) -> None:
        super().__init__(size)
        self.name = name

    def __repr__(self) -> str:
        return self.name


class Storage(StandIn):
    """A storage the file declares; ``size``: elements."""
    __slots__ = ()


class Tensor(StandIn):
    """A tensor rebuilt from a storage; ``size``: elements."""
    __slots__ = ()


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, metadata: Any = None) -> Tensor:
    """``torch._utils._rebuild_tensor_v2`` of a plain tensor that fits in its storage."""
    geometry = (type(offset) is int and type(size) is tuple and type(stride) is tuple
                and len(size) == len(stride) and all(type(n) is int for n in size + stride)
                and min((offset, ) + size + stride) >= 0)
    if not (type(storage) is Storage and geometry and type(requires_grad) is bool
            and _empty_hooks(backward_hooks) and metadata is None):
        raise refuse(f'_rebuild_tensor_v2({describe(storage)}, {describe(offset)}, '
                     f'{describe(size)}, {describe(stride)}, ...) (only a plain tensor)')
    numel = math.prod(size)
    end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if numel else 0
    if end > storage.size:
        raise refuse(f'a tensor of size {size} and stride {stride} at offset {offset} '
                     f'reaching past its storage of {storage.size} elements')
    return Tensor(numel)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> Tensor:
    """``torch._utils._rebuild_parameter`` without hooks."""
    if not (type(data) is Tensor and type(requires_grad) is bool
            and _empty_hooks(backward_hooks)):
        raise refuse('_rebuild_parameter(...) (only a plain tensor, without hooks)')
    return data


def _empty_hooks(hooks: Any) -> bool:
    return type(hooks) is OrderedDict and not hooks and not vars(hooks)


def _encode(text: Any, encoding: Any = None) -> bytes:
    """``_codecs.encode(text, 'latin1')``: how protocol-2 pickles write bytes."""
    if not (type(text) is str and type(encoding) is str and encoding in ('latin1', 'latin-1')):
        raise refuse(f'_codecs.encode({describe(text)}, {describe(encoding)}) (only str to '
                     "bytes with 'latin1')")
    return text.encode('latin1')


def _ordered_dict(*args: Any) -> OrderedDict:
    """``collections.OrderedDict()``, as pickles make it (items come by SETITEMS)."""
    if args:
        raise refuse(f'OrderedDict called with {describe(args)} (only an empty one)')
    return OrderedDict()


def _counter(*args: Any) -> Counter:
    """``collections.Counter(mapping)``, as mmengine's ``MultiStepLR`` state pickles its
    ``milestones``: one plain dict of numbers (or nothing)."""
    numbers = (int, float)
    if not args or (len(args) == 1 and type(args[0]) is dict and all(
            type(k) in numbers and type(v) in numbers for k, v in args[0].items())):
        return Counter(*args)
    raise refuse(f'Counter called with {describe(args)} (only a dict of numbers)')


def _torch_globals() -> Dict[str, Any]:
    names = {
        'collections.OrderedDict': _ordered_dict,
        'collections.Counter': _counter,
        '_codecs.encode': _encode,
        'torch._utils._rebuild_tensor_v2': _rebuild_tensor_v2,
        'torch._utils._rebuild_parameter': _rebuild_parameter,
    }
    for dtype, name in torch.storage._dtype_to_storage_type_map().items():
        names[f'torch.{name}'] = StorageType(f'torch.{name}', dtype.itemsize)
    return names


# Every global a checkpoint may name, and what it evaluates to here.
ADMITTED: Dict[str, Any] = {**_torch_globals(), **NARROW_GLOBALS}
name_globals(ADMITTED)
_CALLABLE = {id(obj) for obj in ADMITTED.values() if callable(obj)}


def global_name(arg: str) -> str:
    """``module.name`` of a GLOBAL opcode's argument, renamed as torch's unpickler does."""
    module, name = arg.split(' ', 1)
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f'{module}.{name}'


def refused_globals(data: bytes) -> List[str]:
    """The globals ``data`` names outside :data:`ADMITTED`, in order (those before the first
    malformed opcode)."""
    names: List[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            name = global_name(arg) if op.name == 'GLOBAL' else None
            if name is not None and name not in ADMITTED and name not in names:
                names.append(name)
    except ValueError:
        pass
    return names


class _PrePass:
    """torch's weights-only unpickling rules (``torch/_weights_only_unpickler.py``) over
    :data:`ADMITTED`, with stand-ins; records the declared storages."""

    def __init__(self) -> None:
        self.stack: List[Any] = []
        self.metastack: List[List[Any]] = []
        self.memo: Dict[int, Any] = {}
        self.storages: Dict[str, int] = {}  # key -> declared bytes

    def run(self, data: bytes) -> None:
        for op, arg, _ in pickletools.genops(data):
            if op.name == 'STOP':
                return
            handler = _OPS.get(op.name)
            if handler is None:
                raise MalformedCheckpoint(f'its pickle uses the opcode {op.name}, which '
                                          'torch.load does not read')
            handler(self, arg)

    def push(self, arg: Any) -> None:
        self.stack.append(arg)

    def pop_mark(self) -> List[Any]:
        items, self.stack = self.stack, self.metastack.pop()
        return items

    def target(self, kinds: Tuple[type, ...]) -> Any:
        target = self.stack[-1]
        if type(target) not in kinds:
            raise refuse(f'adding items to {describe(target)}')
        return target

    def global_(self, arg: str) -> None:
        name = global_name(arg)
        if name not in ADMITTED:
            raise RefusedGlobal([name])
        self.push(ADMITTED[name])

    def reduce(self, _: Any) -> None:
        args, func = self.stack.pop(), self.stack[-1]
        if id(func) not in _CALLABLE or type(args) is not tuple:
            raise refuse(f'calling {describe(func)}')
        self.stack[-1] = _call(func, func, args)

    def newobj(self, _: Any) -> None:
        args, cls = self.stack.pop(), self.stack.pop()
        if not any(cls is c for c in PLACEHOLDERS) or type(args) is not tuple:
            raise refuse(f'creating {describe(cls)}')
        self.push(_call(cls, cls.__new__, (cls, ) + args))

    def build(self, _: Any) -> None:
        state, inst = self.stack.pop(), self.stack[-1]
        if type(inst) is OrderedDict:
            inst.__dict__.update(state)
        elif type(inst) in PLACEHOLDERS:
            inst.__setstate__(state)
        else:
            raise refuse(f'BUILD on {describe(inst)}')

    def persistent_id(self, _: Any) -> None:
        pid = self.stack.pop()
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] in ('storage', b'storage')
                and type(pid[1]) is StorageType and type(pid[2]) is str
                and type(pid[3]) is str and type(pid[4]) is int and pid[4] >= 0):
            raise refuse(f'persistent id {describe(pid)} (only a storage)')
        _, kind, key, _, numel = pid
        if self.storages.setdefault(key, numel * kind.size) != numel * kind.size:
            raise DeclaredSizeError(f'storage {key!r} is declared twice with different sizes')
        self.push(Storage(numel))

    def append(self, _: Any) -> None:
        item = self.stack.pop()
        self.target((list, )).append(item)

    def appends(self, _: Any) -> None:
        items = self.pop_mark()
        self.target((list, )).extend(items)

    def setitem(self, _: Any) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self.target((dict, OrderedDict))[key] = value

    def setitems(self, _: Any) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise MalformedCheckpoint('SETITEMS with an odd number of items')
        target = self.target((dict, OrderedDict))
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def mark(self, _: Any) -> None:
        self.metastack.append(self.stack)
        self.stack = []


def _call(what: Any, func: Callable[..., Any], args: tuple) -> Any:
    try:
        return func(*args)
    except TypeError as err:  # wrong arguments for an admitted global
        raise refuse(f'{describe(what)} called with {describe(args)} ({err})') from None


def _tuple_of(n: int) -> Callable[[_PrePass, Any], None]:

    def op(pre: _PrePass, _: Any) -> None:
        if len(pre.stack) < n:
            raise MalformedCheckpoint('a malformed pickle (stack underflow)')
        items = tuple(pre.stack[len(pre.stack) - n:])
        del pre.stack[len(pre.stack) - n:]
        pre.push(items)

    return op


def _constant(value: Callable[[], Any]) -> Callable[[_PrePass, Any], None]:
    return lambda pre, _: pre.push(value())


_OPS: Dict[str, Callable[[_PrePass, Any], Any]] = {
    'PROTO': lambda pre, _: None,
    'GLOBAL': _PrePass.global_,
    'REDUCE': _PrePass.reduce,
    'NEWOBJ': _PrePass.newobj,
    'BUILD': _PrePass.build,
    'BINPERSID': _PrePass.persistent_id,
    'APPEND': _PrePass.append,
    'APPENDS': _PrePass.appends,
    'SETITEM': _PrePass.setitem,
    'SETITEMS': _PrePass.setitems,
    'MARK': _PrePass.mark,
    'TUPLE': lambda pre, _: pre.push(tuple(pre.pop_mark())),
    'EMPTY_TUPLE': _tuple_of(0),
    'TUPLE1': _tuple_of(1),
    'TUPLE2': _tuple_of(2),
    'TUPLE3': _tuple_of(3),
    'NONE': _constant(lambda: None),
    'NEWFALSE': _constant(lambda: False),
    'NEWTRUE': _constant(lambda: True),
    'EMPTY_LIST': _constant(list),
    'EMPTY_DICT': _constant(dict),
    'EMPTY_SET': _constant(set),
    'BININT': _PrePass.push,
    'BININT1': _PrePass.push,
    'BININT2': _PrePass.push,
    'BINFLOAT': _PrePass.push,
    'BINUNICODE': _PrePass.push,
    'LONG1': _PrePass.push,
    # genops decodes SHORT_BINSTRING as latin-1, torch.load as utf-8
    'SHORT_BINSTRING': lambda pre, arg: pre.push(arg.encode('latin-1').decode('utf-8')),
    'BINGET': lambda pre, index: pre.push(pre.memo[index]),
    'LONG_BINGET': lambda pre, index: pre.push(pre.memo[index]),
    'BINPUT': lambda pre, index: pre.memo.__setitem__(index, pre.stack[-1]),
    'LONG_BINPUT': lambda pre, index: pre.memo.__setitem__(index, pre.stack[-1]),
}


def _entries(archive: zipfile.ZipFile, size: int) -> Dict[str, zipfile.ZipInfo]:
    """The zip's entries by lower-case name (torch's zip reader matches names ignoring case),
    refusing compressed, duplicated or out-of-file entries."""
    entries: Dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename.lower()
        if name in entries:
            raise MalformedCheckpoint(f'the zip holds {info.filename!r} twice')
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise DeclaredSizeError(
                f'its entry {info.filename!r} is compressed ({info.compress_size} bytes that '
                f'inflate to {info.file_size}): torch.save never compresses, and inflating '
                'could take far more memory than the file')
        if info.header_offset + info.file_size > size:
            raise DeclaredSizeError(f'its entry {info.filename!r} declares {info.file_size} '
                                    f'bytes, past the end of the {size}-byte file')
        entries[name] = info
    if not entries:
        raise MalformedCheckpoint('the zip is empty')
    return entries


def prescan(f: BinaryIO) -> None:
    """Check the checkpoint open as ``f`` (see the module docstring); leaves ``f`` at 0.

    Raises:
        RefusedGlobal: the pickle names globals outside :data:`ADMITTED` (all of them).
        RefusedCall: an admitted global is called (or built) with what mmdvit does not build.
        DeclaredSizeError: compressed entries, or storages larger than their records or the
            file.
        MalformedCheckpoint: not a PyTorch zip checkpoint, or a malformed pickle.
    """
    size = f.seek(0, io.SEEK_END)
    f.seek(0)
    if size == 0:
        raise MalformedCheckpoint('the file is empty')
    magic = f.read(4)
    if magic[:1] == pickle.PROTO:
        raise MalformedCheckpoint(
            "PyTorch's legacy format (before torch 1.6), which mmdvit's safe reader does not "
            'read; if you trust the file, load it with the trust opt-in and re-save it with '
            'torch.save')
    if magic != ZIP_MAGIC:
        raise MalformedCheckpoint('not a PyTorch zip checkpoint')
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as archive:
            entries = _entries(archive, size)
            prefix = archive.infolist()[0].filename.split('/')[0].lower()
            pickle_info = entries.get(f'{prefix}/data.pkl')
            if pickle_info is None:
                raise MalformedCheckpoint('the zip holds no data.pkl')
            if pickle_info.file_size > MAX_PICKLE_BYTES:
                raise DeclaredSizeError(f'its pickle is {pickle_info.file_size} bytes (more '
                                        f'than {MAX_PICKLE_BYTES})')
            data = archive.read(pickle_info)
    except zipfile.BadZipFile as err:
        raise MalformedCheckpoint(f'a damaged zip: {err}') from None
    finally:
        f.seek(0)
    check = _PrePass()
    try:
        check.run(data)
    except RefusedGlobal:
        raise RefusedGlobal(refused_globals(data)) from None
    except (RefusedCall, MalformedCheckpoint):
        raise
    except Exception as err:  # IndexError, KeyError, ValueError of a malformed pickle...
        raise MalformedCheckpoint(f'a malformed pickle: {type(err).__name__}: {err}') from None
    _check_storages(check.storages, entries, prefix, size)


def _check_storages(storages: Dict[str, int], entries: Dict[str, zipfile.ZipInfo], prefix: str,
                    size: int) -> None:
    for key, nbytes in storages.items():
        record = entries.get(f'{prefix}/data/{key}'.lower())
        held = -1 if record is None else record.file_size
        if held != nbytes:
            raise DeclaredSizeError(
                f'storage {key!r} declares {nbytes} bytes but its record holds '
                + ('nothing' if record is None else f'{held}'))
    total = sum(storages.values())
    if total > size:
        raise DeclaredSizeError(f'its storages declare {total} bytes in all, more than the '
                                f'{size}-byte file')
