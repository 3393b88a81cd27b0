"""Read a PyTorch Lightning ``.ckpt`` (a ``torch.save`` zip archive) without trusting it.

A Lightning checkpoint pickles more than tensors: the hyperparameters are objects (an omegaconf
``DictConfig``, Lightning's ``AttributeDict``, an ``argparse.Namespace``), so
``torch.load(weights_only=True)`` refuses the file and ``weights_only=False`` would run whatever
its pickle names. ``read_checkpoint`` unpickles it with an allow-list instead:

- containers, strings and numbers as the pickle builds them;
- tensors as ``LazyTensor`` records (storage, dtype, offset, size, stride) over the memory-mapped
  archive: nothing is read until ``materialize``, so the optimizer state of a 13 GB file costs
  a few Python objects and never its bytes;
- the hyperparameter classes rebuilt as plain data by inert stand-ins, never imported: omegaconf's
  configs and nodes become dicts, lists and values, ``AttributeDict`` a dict, ``Namespace`` a
  dict of its attributes, a type reference its name;
- anything else is refused with ``UnsafeCheckpointError`` naming the class; its code never runs.

Every problem is one line naming the file: a truncated archive, a pickle that is not a
checkpoint, a tensor whose bytes lie outside the file.
"""

from __future__ import annotations

import collections
import io
import mmap
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as one; the message names the file."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint whose pickle asks for something a checkpoint never holds."""


# ---------------------------------------------------------------------------------------------
# inert stand-ins


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


@dataclass(frozen=True)
class StorageRef:
    """One storage record of the archive: ``key`` names ``<prefix>/data/<key>``."""

    key: str
    dtype: torch.dtype
    numel: int


@dataclass(frozen=True)
class LazyTensor:
    """A tensor of the checkpoint, not yet read: its storage and its view of it."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.size

    @property
    def dtype(self) -> torch.dtype:
        return self.storage.dtype

    def numel(self) -> int:
        n = 1
        for s in self.size:
            n *= s
        return n

    def same_view(self, other: "LazyTensor") -> bool:
        return (self.storage.key, self.offset, self.size, self.stride) == (
            other.storage.key, other.offset, other.size, other.stride)


@dataclass(frozen=True)
class TypeName:
    """A type the pickle refers to as a value (omegaconf records ``typing.Any``, ``dict``, ...)."""

    name: str


class _Record:
    """An object of an allowed hyperparameter class, as data: NEWOBJ's arguments and BUILD's state."""

    origin = ""

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __setstate__(self, state):
        self.state = state


class _DictRecord(dict):
    """A dict subclass of an allowed hyperparameter class (Lightning's ``AttributeDict``)."""

    origin = ""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.update(state)


def _record_class(origin: str, base=_Record):
    return type(origin.rsplit(".", 1)[-1], (base,), {"origin": origin})


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, StorageRef):
        raise UnsafeCheckpointError("a tensor whose storage is not a storage record")
    return LazyTensor(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _defaultdict(*args):
    return {}


_OMEGACONF_CLASSES = [
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.base.Metadata",
    "omegaconf.base.ContainerMetadata", "omegaconf.nodes.AnyNode", "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode", "omegaconf.nodes.FloatNode", "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.BytesNode", "omegaconf.nodes.PathNode", "omegaconf.nodes.EnumNode",
    "omegaconf.nodes.InterpolationResultNode", "argparse.Namespace",
]
_ATTRIBUTE_DICTS = [
    "pytorch_lightning.utilities.parsing.AttributeDict", "lightning.pytorch.utilities.parsing.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict", "lightning.fabric.utilities.data.AttributeDict",
]
_TYPE_NAMES = [
    "typing.Any", "builtins.dict", "builtins.list", "builtins.int", "builtins.float", "builtins.str",
    "builtins.bool", "builtins.bytes", "builtins.tuple", "builtins.object", "builtins.NoneType",
    "__builtin__.dict", "__builtin__.list", "__builtin__.int", "__builtin__.long", "__builtin__.float",
    "__builtin__.str", "__builtin__.unicode", "__builtin__.bool", "__builtin__.bytes", "__builtin__.tuple",
    "__builtin__.object",
]


def _allowed() -> dict[str, object]:
    allowed: dict[str, object] = {
        "collections.OrderedDict": collections.OrderedDict,
        "collections.defaultdict": _defaultdict,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    }
    allowed.update({f"torch.{name}": _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()})
    allowed.update({origin: _record_class(origin) for origin in _OMEGACONF_CLASSES})
    allowed.update({origin: _record_class(origin, _DictRecord) for origin in _ATTRIBUTE_DICTS})
    allowed.update({name: TypeName(name.replace("__builtin__.", "builtins.")) for name in _TYPE_NAMES})
    return allowed


_ALLOWED = _allowed()


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        found = _ALLOWED.get(f"{module}.{name}")
        if found is None:
            raise UnsafeCheckpointError(f"{module}.{name}")
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafeCheckpointError(f"persistent id {str(pid)[:60]}")
        _, storage_type, key, _location, numel = pid
        return StorageRef(str(key), storage_type.dtype, int(numel))


# ---------------------------------------------------------------------------------------------
# plain data


def plain(obj):
    """The hyperparameters as plain data: records of omegaconf configs become dicts and lists
    (their nodes the values), ``AttributeDict`` a dict, ``Namespace`` a dict of its attributes."""
    if isinstance(obj, _DictRecord):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, _Record):
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict state, slot state)
        if not isinstance(state, dict):
            return plain(state)
        if obj.origin.endswith(("DictConfig", "ListConfig")):
            return plain(state.get("_content"))
        if obj.origin.startswith("omegaconf.nodes."):
            return plain(state.get("_val"))
        if obj.origin == "argparse.Namespace":
            return {k: plain(v) for k, v in state.items()}
        return {k: plain(v) for k, v in state.items() if not k.startswith("_")}
    if isinstance(obj, type) and issubclass(obj, (_Record, _DictRecord)):
        return TypeName(obj.origin)
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(plain(v) for v in obj)
    return obj


# ---------------------------------------------------------------------------------------------
# the archive


@dataclass
class Checkpoint:
    """A Lightning checkpoint read safely: ``state_dict`` of ``LazyTensor``, the
    ``hyper_parameters`` as plain data, the other top-level entries in ``top`` (raw)."""

    path: Path
    state_dict: dict[str, LazyTensor]
    hyper_parameters: dict
    top: dict = field(repr=False)
    _archive: "_Archive" = field(repr=False)

    def materialize(self, tensor: LazyTensor) -> torch.Tensor:
        """The tensor itself, a view of the memory-mapped file (copy-on-write: writing to it
        never touches the file)."""
        return self._archive.tensor(tensor)

    def check(self, tensor: LazyTensor) -> str | None:
        """Why ``tensor`` cannot be read from the file (a record missing or cut short), or None."""
        return self._archive.check(tensor)

    def close(self) -> None:
        self._archive.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Archive:
    """The zip archive of ``torch.save``: its pickle and its storage records, memory-mapped."""

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size
        try:
            self.zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint (no zip directory at the end "
                                  f"of its {self.size:,} bytes)") from None
        names = self.zip.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: not a torch.save archive (expected one <name>/data.pkl, "
                                  f"found {len(pickles)})")
        self.prefix = pickles[0][: -len("data.pkl")]
        self.records = {info.filename: info for info in self.zip.infolist()}
        self._file = open(path, "rb")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_COPY) if self.size else None
        self._bytes = torch.frombuffer(self._map, dtype=torch.uint8) if self._map is not None else None
        self._offsets: dict[str, int] = {}

    def pickle_bytes(self) -> bytes:
        try:
            return self.zip.read(self.prefix + "data.pkl")
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointError(f"{self.path}: its pickle cannot be read ({e})") from None

    def data_offset(self, key: str) -> tuple[int, int]:
        """(first byte in the file, size) of storage record ``key``."""
        name = f"{self.prefix}data/{key}"
        info = self.records.get(name)
        if info is None:
            raise CheckpointError(f"{self.path}: storage record {name} is missing")
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{self.path}: storage record {name} is compressed; torch.save stores them raw")
        if name not in self._offsets:
            header = self._map[info.header_offset: info.header_offset + 30]
            if len(header) < 30 or header[:4] != b"PK\x03\x04":
                raise CheckpointError(f"{self.path}: storage record {name} has no local header (truncated file?)")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            self._offsets[name] = info.header_offset + 30 + name_len + extra_len
        return self._offsets[name], info.file_size

    def check(self, tensor: LazyTensor) -> str | None:
        """Why the tensor cannot be read, or None."""
        try:
            start, size = self.data_offset(tensor.storage.key)
        except CheckpointError as e:
            return str(e).split(": ", 1)[-1]
        item = torch.empty((), dtype=tensor.dtype).element_size()
        if size < tensor.storage.numel * item:
            return f"storage {tensor.storage.key} holds {size} bytes, fewer than its {tensor.storage.numel} elements"
        if start + size > self.size:
            return f"storage {tensor.storage.key} ends past the end of the file (truncated?)"
        last = tensor.offset + sum((s - 1) * st for s, st in zip(tensor.size, tensor.stride)) if tensor.numel() else 0
        if tensor.offset < 0 or last >= max(tensor.storage.numel, 1) and tensor.numel():
            return f"a view past the end of storage {tensor.storage.key}"
        return None

    def tensor(self, tensor: LazyTensor) -> torch.Tensor:
        problem = self.check(tensor)
        if problem:
            raise CheckpointError(f"{self.path}: {problem}")
        start, _ = self.data_offset(tensor.storage.key)
        item = torch.empty((), dtype=tensor.dtype).element_size()
        flat = self._bytes[start: start + tensor.storage.numel * item].view(tensor.dtype)
        # as_strided's offset counts from the start of the whole mapping, not of this record
        return flat.as_strided(tensor.size, tensor.stride, flat.storage_offset() + tensor.offset)

    def close(self) -> None:
        self._bytes = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # tensors still view it; the mapping goes with them
                pass
        self._file.close()
        self.zip.close()


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Open a Lightning checkpoint safely (see the module docstring). Raises ``CheckpointError``
    (``UnsafeCheckpointError`` for a refused class) with one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    archive = _Archive(path)
    try:
        data = archive.pickle_bytes()
        try:
            top = _Unpickler(io.BytesIO(data)).load()
        except UnsafeCheckpointError as e:
            raise UnsafeCheckpointError(
                f"{path}: refused: its pickle asks for {e}, which a checkpoint never holds; nothing in it was "
                f"run (only tensors, containers, numbers, strings and omegaconf/Lightning/argparse "
                f"hyperparameters are admitted)") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
            raise CheckpointError(f"{path}: its pickle is damaged ({type(e).__name__}: {e})") from None
        if not isinstance(top, dict) or not isinstance(top.get("state_dict"), dict):
            found = sorted(top)[:8] if isinstance(top, dict) else type(top).__name__
            raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict' entry; found {found})")
        state = top["state_dict"]
        bad = [k for k, v in state.items() if not isinstance(v, LazyTensor)]
        if bad:
            raise CheckpointError(f"{path}: state_dict entries that are not tensors: {bad[:5]}")
        hparams = plain(top.get("hyper_parameters") or {})
        if not isinstance(hparams, dict):
            hparams = {"hyper_parameters": hparams}
        return Checkpoint(path, dict(state), hparams, top, archive)
    except BaseException:
        archive.close()
        raise


__all__ = [
    "Checkpoint", "CheckpointError", "LazyTensor", "StorageRef", "TypeName", "UnsafeCheckpointError", "plain",
    "read_checkpoint",
]
