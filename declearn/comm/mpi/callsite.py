r"""Where a collective was called from: the *call site* MPIComm writes into its headers.

Every rank of a collective must reach the same call, and headers that only compare the
operation, shape and dtype pair up two calls made from different lines (the classic bug: an
``if rank == 0:`` around a collective). So each header also carries the call site: the first
frame outside ``declearn/comm`` (the user's line, or the algorithm's line when a library
algorithm calls), as ``SITE_WORDS`` int64 words

.. math::  [\,h(\text{name}, \text{line}),\ \text{line},\ \text{name}_{0..39}\,]

where ``name`` is the file's base name (a notebook cell: ``cell <hash>``, the part of the
cell's file name that comes from its content, the same on every engine) and ``h`` a CRC-32.
A call with ``tag="..."`` carries the tag instead (``line = -1``): calls pair only with calls
of the same tag, from any line. Words are cached per (code object, instruction offset) of
the calling frame, so the hot path costs one frame walk and one dict lookup (no line-table
decoding: the offset determines the line).

:func:`describe_site` turns words back into ``repro.py:5 (`b = comm.allreduce(x)`)``, reading
the source line from this process's copy of the file when it has one.
"""

from __future__ import annotations

import linecache
import os
import re
import sys
import zlib

import numpy as np

__all__ = ["SITE_WORDS", "NO_SITE", "call_site", "tag_site", "describe_site"]

_NAME_BYTES = 40
#: int64 words of a call site in a header: hash, line, 40 bytes of name.
SITE_WORDS = 2 + _NAME_BYTES // 8
#: The words of "no call site" (MPIComm(check_call_sites=False)): every call matches.
NO_SITE = np.zeros(SITE_WORDS, np.int64)

_COMM_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # declearn/comm/
_CELL_FILE = re.compile(r"ipykernel_\d+[/\\](\w+)\.py$|<ipython-input-\d+-(\w+)>$")
_INSIDE: dict[str, bool] = {}  # file name -> inside declearn/comm?
_SITES: dict[tuple, tuple] = {}  # (id(code), offset) -> (code, words); code: the id's owner
_TAGS: dict[str, np.ndarray] = {}  # tag -> words
_PATHS: dict[str, str] = {}  # short name -> this process's file name (for describe_site)


def _short_name(filename: str) -> str:
    cell = _CELL_FILE.search(filename)
    if cell is not None:
        return "cell " + (cell.group(1) or cell.group(2))
    return os.path.basename(filename) or filename


def _words(key: str, line: int, label: str) -> np.ndarray:
    raw = label.encode("utf-8", "replace")[-_NAME_BYTES:].ljust(_NAME_BYTES, b"\0")
    words = np.empty(SITE_WORDS, np.int64)
    words[0] = zlib.crc32(f"{key}\0{line}".encode("utf-8", "replace"))
    words[1] = line
    words[2:] = np.frombuffer(raw, np.int64)
    return words


def call_site(depth: int = 2) -> np.ndarray:
    """The words of the first frame outside ``declearn/comm``, starting ``depth`` frames
    above this function (the cached array itself: do not modify it)."""
    frame = sys._getframe(depth)
    code = frame.f_code
    inside = _INSIDE.get(code.co_filename)
    while inside is not False:
        if inside is None:
            filename = code.co_filename
            inside = _INSIDE[filename] = os.path.abspath(filename).startswith(_COMM_DIR)
            continue
        frame = frame.f_back
        if frame is None:
            return NO_SITE
        code = frame.f_code
        inside = _INSIDE.get(code.co_filename)
    key = (id(code), frame.f_lasti)
    hit = _SITES.get(key)
    if hit is not None and hit[0] is code:
        return hit[1]
    filename, line = code.co_filename, frame.f_lineno
    name = _short_name(filename)
    _PATHS.setdefault(name, filename)
    if len(_SITES) >= 4096:
        _SITES.clear()
    words = _words(name, line, name)
    _SITES[key] = (code, words)
    return words


def tag_site(tag: str) -> np.ndarray:
    """The words of ``tag=...`` (the caller checked it is a non-empty string)."""
    words = _TAGS.get(tag)
    if words is None:
        words = _TAGS[tag] = _words("tag\0" + tag, -1, tag)
        if len(_TAGS) > 4096:
            _TAGS.clear()
    return words


def describe_site(words) -> str:
    """Site words in words: ``repro.py:5 (`b = comm.allreduce(x)`)``, ``a notebook cell, line
    3 (...)``, ``tag 'grads'``, or ``an unknown line`` (call sites not checked)."""
    words = np.asarray(words, np.int64)
    line = int(words[1])
    raw = words[2:].tobytes().rstrip(b"\0")
    name = raw.decode("utf-8", "replace")
    if line == -1:
        return f"tag {name!r}"
    if not name:
        return "an unknown line"
    where = f"a notebook cell ({name[5:]}), line {line}" if name.startswith("cell ") \
        else f"{name}:{line}"
    path = _PATHS.get(name)
    source = linecache.getline(path, line).strip() if path else ""
    if len(source) > 60:
        source = source[:57] + "..."
    return f"{where} (`{source}`)" if source else where
