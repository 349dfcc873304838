"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

The one way the library writes a file (or a folder) atomically: the content goes to a hidden temporary sibling
``.<name>.tmp``, which is renamed over the target with ``os.replace`` only once it is complete, and removed when
writing it failed. (The remote-code files in ``models/hyperrep/`` stay self-contained and do not use this.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


def temporary_sibling(path: str | os.PathLike, unique: bool = False) -> Path:
    """The hidden temporary name beside ``path``: ``.<name>.tmp``, or ``.<name>.<random>.tmp`` when ``unique``.

    Use ``unique`` where several processes may write the same target at once (a shared cache); the plain name is
    the same in every process, which a folder written by several processes together needs.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp" if unique else f".{path.name}.tmp")


def remove_path(path: str | os.PathLike) -> None:
    """Removes a file or a folder; nothing when it does not exist."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace_path(temporary: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Renames the finished ``temporary`` over ``path`` (a folder already at ``path`` is removed first)."""
    path = Path(path)
    if Path(temporary).is_dir() and path.is_dir():
        shutil.rmtree(path)
    os.replace(temporary, path)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, unique: bool = False) -> Iterator[Path]:
    """Yields a temporary sibling of ``path`` to write; renames it over ``path`` on success, removes it on failure.

    Args:
        path: the file (or folder) to write.
        unique: a temporary name of its own (several processes may write ``path`` at once).

    Example:
        >>> with atomic_path(target) as temporary:  # doctest: +SKIP
        ...     save_file(tensors, temporary)
    """
    temporary = temporary_sibling(path, unique)
    remove_path(temporary)  # a leftover of an interrupted run
    try:
        yield temporary
    except BaseException:
        remove_path(temporary)
        raise
    replace_path(temporary, path)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any], unique: bool = False) -> Path:
    """Calls ``write(temporary)`` and renames the result over ``path``; returns ``path``."""
    with atomic_path(path, unique) as temporary:
        write(temporary)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` to a hidden temporary file beside ``path``, then renames it over ``path``."""
    return write_atomic(path, lambda temporary: temporary.write_text(text))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to a hidden temporary file beside ``path``, then renames it over ``path``."""
    return write_atomic(path, lambda temporary: temporary.write_bytes(data))


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for the library's documents: numpy scalars become Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def write_json_atomic(path: str | os.PathLike, data: Any, trailing_newline: bool = True) -> Path:
    """Writes ``data`` as indented JSON (``json_default`` for numpy scalars and tuples), atomically."""
    return write_text_atomic(
        path, json.dumps(data, indent=2, default=json_default) + ("\n" if trailing_newline else "")
    )
