"""Read the weights of a TorchScript archive (OpenAI's `ViT-B-16.pt`) as data, running none of its code.

`torch.jit.load` compiles the archive's `code/` and calls its classes' `__setstate__`, so a
crafted archive runs whatever it likes. Here the archive is a zip read by hand:

- `data.pkl` is unpickled with a restricted unpickler. Tensors are rebuilt from the archive's
  `data/N` storages (raw little-endian bytes); every other class named in the pickle becomes an
  inert `ScriptObject` record of its name and state. Nothing is imported, compiled or called.
- which attributes of a module are its parameters and buffers is read from the
  `__parameters__ = [...]` / `__buffers__ = [...]` lines of its class in `code/`, as text
  (`ast.literal_eval` of a list of strings).
- the state dict is then the module tree's parameters and buffers, with dotted names, in the
  order `torch.jit.load(...).state_dict()` gives them.
"""

from __future__ import annotations

import ast
import io
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cpcl.utils.errors import CheckpointError

STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
CLASS_RE = re.compile(r"^class\s+([A-Za-z_][\w.]*)\s*\(")
MEMBER_RE = re.compile(r"^\s+(__parameters__|__buffers__)\s*=\s*(\[.*\])\s*$")


class ScriptObject:
    """An inert stand-in for any class the pickle names: its qualified name, constructor
    arguments and state are kept as data; no method of the real class exists here."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> ScriptObject:
        obj = super().__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _record_class(qualname: str) -> type[ScriptObject]:
    return type("ScriptObject", (ScriptObject,), {"qualname": qualname})


def _storage_marker(name: str) -> Callable[..., Any]:
    def marker(*_: Any) -> None:
        raise CheckpointError(f"storage type {name} used as a function")
    marker.dtype = STORAGE_DTYPES[name]  # type: ignore[attr-defined]
    return marker


def _rebuild_tensor(storage: Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> Tensor:
    """torch._utils._rebuild_tensor_v2 over a 1-D storage tensor, bounds-checked."""
    if not isinstance(storage, Tensor):
        raise CheckpointError("a tensor in data.pkl does not refer to an archive storage")
    dims = (offset, *size, *stride)
    if not all(isinstance(v, int) and v >= 0 for v in dims) or len(size) != len(stride):
        raise CheckpointError(f"a tensor in data.pkl has an invalid layout: offset {offset}, size {size}, "
                              f"stride {stride}")
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0
    if extent > storage.numel():
        raise CheckpointError(f"a tensor in data.pkl reaches element {extent} of a storage of {storage.numel()}")
    return storage.as_strided(size, stride, offset).clone()


SAFE_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch.jit._pickle", "build_intlist"): list,
    ("torch.jit._pickle", "build_doublelist"): list,
    ("torch.jit._pickle", "build_boollist"): list,
    ("torch.jit._pickle", "build_tensorlist"): list,
    ("torch.jit._pickle", "restore_type_tag"): lambda value, _tag: value,
}


class _ArchiveUnpickler(pickle.Unpickler):
    """Unpickles `data.pkl`: tensors from the archive's storages, everything else inert."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path = archive, prefix, path
        self.storages: dict[str, Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_GLOBALS:
            return SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _storage_marker(name)
        return _record_class(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.path}: unexpected persistent id in data.pkl: {pid!r:.80}")
        _, marker, key, _location, numel = pid
        dtype = getattr(marker, "dtype", None)
        if dtype is None or not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self.path}: invalid storage reference in data.pkl: {pid!r:.80}")
        if key not in self.storages:
            name = f"{self.prefix}data/{key}"
            try:
                raw = self.archive.read(name)
            except KeyError:
                raise CheckpointError(f"{self.path}: storage {name} is missing from the archive") from None
            itemsize = torch.empty(0, dtype=dtype).element_size()
            if len(raw) < numel * itemsize:
                raise CheckpointError(f"{self.path}: storage {name} has {len(raw)} bytes, "
                                      f"{numel} x {itemsize} expected")
            self.storages[key] = torch.frombuffer(bytearray(raw[:numel * itemsize]), dtype=dtype) \
                if numel else torch.empty(0, dtype=dtype)
        return self.storages[key]


def _archive_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    """The archive's top folder ("name/"), where data.pkl lies."""
    roots = [name[: -len("data.pkl")] for name in archive.namelist()
             if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(roots) != 1:
        raise CheckpointError(f"{path} is not a TorchScript archive: expected one top-level */data.pkl, "
                              f"found {len(roots)}")
    return roots[0]


def module_members(archive: zipfile.ZipFile, prefix: str) -> dict[str, tuple[list[str], list[str]]]:
    """{qualified class name: (parameter names, buffer names)} from the `code/` files, read as text."""
    members: dict[str, tuple[list[str], list[str]]] = {}
    code = f"{prefix}code/"
    for name in archive.namelist():
        if not (name.startswith(code) and name.endswith(".py")):
            continue
        module = name[len(code):-len(".py")].replace("/", ".")
        current = None
        for line in archive.read(name).decode("utf-8", errors="replace").splitlines():
            if match := CLASS_RE.match(line):
                current = f"{module}.{match.group(1)}"
                members[current] = ([], [])
            elif current is not None and (match := MEMBER_RE.match(line)):
                try:
                    names = ast.literal_eval(match.group(2))
                except (ValueError, SyntaxError):
                    names = None
                if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                    raise CheckpointError(f"{name}: unreadable {match.group(1)} of class {current}")
                members[current][0 if match.group(1) == "__parameters__" else 1].extend(names)
    return members


def _collect(obj: ScriptObject, prefix: str, members: dict[str, tuple[list[str], list[str]]],
             out: dict[str, Tensor], where: Path) -> None:
    """Parameters and buffers of the module record `obj` and its children, as state-dict keys."""
    if obj.qualname not in members:
        raise CheckpointError(f"{where}: class {obj.qualname} of module '{prefix.rstrip('.') or '<root>'}' "
                              f"has no definition in the archive's code/")
    if not isinstance(obj.state, dict):
        raise CheckpointError(f"{where}: module '{prefix.rstrip('.') or '<root>'}' ({obj.qualname}) has a "
                              f"custom state, not an attribute dict; it cannot be read as weights")
    params, buffers = members[obj.qualname]
    for name in params + buffers:
        value = obj.state.get(name)
        if value is None:
            continue
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{where}: {prefix}{name} is a {type(value).__name__}, not a tensor")
        out[prefix + name] = value
    for name, value in obj.state.items():
        if isinstance(value, ScriptObject) and value.qualname.startswith("__torch__."):
            _collect(value, f"{prefix}{name}.", members, out, where)


def read_torchscript_weights(path: Path) -> dict[str, Tensor]:
    """The state dict of the TorchScript archive at `path`, read as data (see the module docstring)."""
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(archive, path)
            byteorder = archive.read(f"{prefix}byteorder").decode().strip() \
                if f"{prefix}byteorder" in archive.namelist() else "little"
            if byteorder != "little":
                raise CheckpointError(f"{path}: {byteorder}-endian archives are not supported")
            members = module_members(archive, prefix)
            root = _ArchiveUnpickler(archive.read(f"{prefix}data.pkl"), archive, prefix, path).load()
    except CheckpointError:
        raise
    except Exception as err:  # zip, pickle and decoding errors of a damaged or foreign archive
        raise CheckpointError(f"cannot read TorchScript archive {path}: {type(err).__name__}: {err}") from err
    if not isinstance(root, ScriptObject):
        raise CheckpointError(f"{path}: data.pkl holds a {type(root).__name__}, not a TorchScript module")
    state: dict[str, Tensor] = {}
    _collect(root, "", members, state, path)
    return state
