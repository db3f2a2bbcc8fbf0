"""Helpers shared by every plain config dataclass: dict round trips, JSON files, atomic folders.

Configs live next to what they build; this module only turns them into JSON-able dicts and
back, naming the field that is wrong when a saved file does not match the dataclass.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import types
import typing
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A saved or given config value of the wrong type or shape; the message names the field."""


def choice[E: enum.Enum](kind: type[E], value: Any, name: str) -> E:
    """`value` as a member of the choice enum `kind`, or an error naming the field and the options."""
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}; choose one of {[m.value for m in kind]}") from None


def to_dict(cfg: Any) -> dict:
    """JSON-able: choice enums become their string values."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict[T](cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a (possibly nested) dict; unknown keys and values of the wrong
    type raise, naming the field."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; valid keys are {sorted(names)}")
    kwargs = {key: _convert(hints[key], value, f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` (JSON types: int may stand for float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {args}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return choice(tp, value, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        items = [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        if not args:
            return dict(value)
        return {_convert(args[0], k, where): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return value
    return value


# ------------------------------------------------------------------------------- files
def _umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else set-and-restore."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file so that a crash leaves either the old or the new content, never half.
    The file gets the user's umask (mkstemp alone would make it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# Each `atomic_dir` writes inside a staging folder of its own next to the target:
#   .NAME.vla-TAG-PID-HEX/   with MARKER (written first: the target's name and the writer's pid),
#       new/                 the folder being built (what the caller gets)
#       complete             present once the build finished: new/ may replace NAME
#       old/                 the previous NAME, moved aside during the swap
# Recovery touches only staging folders that hold the marker naming them: a user's own entries
# beside the target are never taken for temporaries, whatever their names (`recover_dir`).
_TAGS = ("tmp", "building", "recording")  # what callers may name the being-written stage
_STAGING = re.compile(r"^\.(?P<name>.+)\.vla-(?:tmp|building|recording)-(?P<pid>\d+)-[0-9a-f]{8}$")
MARKER = ".vla-atomic.json"


@contextmanager
def atomic_dir(path: str | os.PathLike, tag: str = "tmp") -> Iterator[Path]:
    """Yield a fresh path to build a folder in; when the block succeeds it replaces `path` (the
    old folder is removed), when it fails it is deleted: readers only ever see a complete folder.
    A process killed part-way leaves a staging folder that `recover_dir` resolves: a finished
    build is promoted, else the previous folder is restored."""
    if tag not in _TAGS:
        raise ValueError(f"atomic_dir tag {tag!r}; choose one of {_TAGS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.vla-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    (staging / MARKER).write_text(json.dumps({"target": path.name, "pid": os.getpid()}))
    new = staging / "new"
    try:
        yield new
        if new.is_dir():  # some writers (safetensors, mkstemp) create 0600 files: the user's umask decides
            mode = 0o666 & ~_umask()
            for f in new.rglob("*"):
                if f.is_file() and not f.is_symlink():
                    f.chmod(mode)
        (staging / "complete").touch()
        if path.exists():
            path.rename(staging / "old")
        new.rename(path)
    except BaseException:
        if (staging / "complete").exists():  # interrupted inside the swap: finish it now
            _resolve(staging, path)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def scratch_folder(parent: str | os.PathLike, name: str) -> Iterator[Path]:
    """A marked temporary folder `.NAME.vla-tmp-PID-HEX` in `parent`, removed on exit; one that a
    killed process left is removed by `recover_dir(parent)` (it holds no complete build)."""
    parent = Path(parent)
    folder = parent / f".{name}.vla-tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    try:
        (folder / MARKER).write_text(json.dumps({"target": name, "pid": os.getpid()}))
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _resolve(staging: Path, target: Path) -> str | None:
    """Put the right version at `target` from a dead writer's staging folder; returns what was done."""
    new, old = staging / "new", staging / "old"
    # A complete build was about to replace NAME: it is the newest version unless NAME was
    # rewritten later (by another writer). The previous version matters only when NAME is gone.
    promote = None
    if (staging / "complete").exists() and new.is_dir():
        if not target.exists() or target.stat().st_mtime <= new.stat().st_mtime:
            promote = new
    if promote is None and old.is_dir() and not target.exists():
        promote = old
    if promote is None:
        return None
    if target.exists():
        shutil.rmtree(target)
    promote.rename(target)
    return "a complete save" if promote == new else "the previous version"


def recover_dir(folder: str | os.PathLike) -> list[str]:
    """Resolve what killed `atomic_dir` writers left in `folder`; returns log lines.

    Only staging folders carrying `atomic_dir`'s marker for their own name are considered, and
    only those whose writer is dead: the right version is put in place, the rest removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    lines = []
    for p in sorted(folder.iterdir()):
        m = _STAGING.match(p.name)
        if m is None or not p.is_dir() or p.is_symlink():
            continue
        try:
            marker = json.loads((p / MARKER).read_text())
        except (OSError, ValueError):
            continue  # not made by atomic_dir
        if marker != {"target": m["name"], "pid": int(m["pid"])} or _alive(int(m["pid"])):
            continue
        what = _resolve(p, folder / m["name"])
        if what:
            lines.append(f"{folder / m['name']}: restored {what} left by an interrupted write ({p.name})")
        shutil.rmtree(p, ignore_errors=True)
        lines.append(f"removed stale temporary {p} (its writer, pid {m['pid']}, is gone)")
    for line in lines:
        log.warning(line)
    return lines


def save_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore or remove it") from e
