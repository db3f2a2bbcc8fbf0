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
import time
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


# Temporaries of `atomic_dir` next to the folder they build: .NAME.STAGE-PID-HEX
#   STAGE = the caller's tag (being written), "done" (complete, about to replace NAME),
#   "old" (the previous NAME, about to be removed). The pid tells a live writer from a dead one.
_TAGS = ("tmp", "building", "recording")  # what callers may name the being-written stage
_TEMP = re.compile(
    r"^\.(?P<name>.+)\.(?P<stage>tmp|building|recording|done|old)-(?:(?P<pid>\d+)-)?(?P<hex>[0-9a-f]{8})$"
)
# Versions before the pid was in the name wrote .NAME.STAGE-HEX: stale once this old.
_LEGACY_STALE_S = 3600


@contextmanager
def atomic_dir(path: str | os.PathLike, tag: str = "tmp") -> Iterator[Path]:
    """Yield a fresh sibling path to build a folder in; when the block succeeds it replaces
    `path` (the old folder is removed), when it fails it is deleted: readers only ever see a
    complete folder. A process killed part-way leaves temporaries that `recover_dir` resolves:
    a finished build ("done") is promoted, else the previous folder ("old") is restored."""
    if tag not in _TAGS:  # recover_dir only recognises these: anything else would never be cleaned
        raise ValueError(f"atomic_dir tag {tag!r}; choose one of {_TAGS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = f".{path.name}.{{}}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = path.parent / stem.format(tag)
    try:
        yield tmp
        if tmp.is_dir():  # some writers (safetensors, mkstemp) create 0600 files: the user's umask decides
            mode = 0o666 & ~_umask()
            for f in tmp.rglob("*"):
                if f.is_file() and not f.is_symlink():
                    f.chmod(mode)
        done = path.parent / stem.format("done")
        tmp.rename(done)
        tmp = done
        if path.exists():
            old = path.parent / stem.format("old")
            path.rename(old)
            done.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            done.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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


def recover_dir(folder: str | os.PathLike) -> list[str]:
    """Resolve what killed `atomic_dir` writers left in `folder`; returns log lines.

    For each NAME whose writer is dead: if NAME is missing, the newest complete build ("done")
    becomes NAME, else the previous version ("old") is restored; every other temporary of a
    dead writer is removed. Temporaries of live processes are left alone."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale: dict[str, list[tuple[str, Path]]] = {}
    now = time.time()
    for p in folder.iterdir():
        m = _TEMP.match(p.name)
        if m is None:
            continue
        dead = not _alive(int(m["pid"])) if m["pid"] else now - p.stat().st_mtime > _LEGACY_STALE_S
        if dead:
            stale.setdefault(m["name"], []).append((m["stage"], p))
    lines = []
    for name, temps in sorted(stale.items()):
        target = folder / name
        done = sorted((p for s, p in temps if s == "done"), key=lambda p: p.stat().st_mtime)
        old = sorted((p for s, p in temps if s == "old"), key=lambda p: p.stat().st_mtime)
        # A "done" build is complete and was about to replace NAME: it is the newest version
        # unless NAME was rewritten later. An "old" one matters only when NAME is gone.
        promote = None
        if done and (not target.exists() or target.stat().st_mtime <= done[-1].stat().st_mtime):
            promote = done[-1]
        elif old and not target.exists():
            promote = old[-1]
        if promote is not None:
            if target.exists():
                shutil.rmtree(target)
            promote.rename(target)
            what = "a complete save" if promote in done else "the previous version"
            lines.append(f"{target}: restored {what} left by an interrupted write ({promote.name})")
        for _, p in temps:
            if p == promote:
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            lines.append(f"removed stale temporary {p} (its writer, pid {_TEMP.match(p.name)['pid'] or '?'}, is gone)")
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
