r"""Checkpoints of a decentralized training run: one file per rank, written atomically.

::

    save_checkpoint(folder, comm, model=model, opt=opt, batches=batches.generator, step=step)
    ...                                   # crash, cluster.restart(), rebuild model and opt
    saved = load_checkpoint(folder, comm, model=model, opt=opt, batches=batches.generator)
    step = saved["step"]

**What is saved.** Each keyword names one object: anything with ``state_dict()`` and
``load_state_dict()`` (a model, a :mod:`declearn.optim` optimizer, an lr scheduler) is saved
by its state and restored in place; a ``torch.Generator`` (e.g. ``NodeBatches.generator``) by
its state; any other value (numbers, strings, tensors, lists and dicts of them) as it is, and
:func:`load_checkpoint` returns those in a dict.

**Files.** Under MPIComm rank r of n writes ``<folder>/checkpoint-rank<r>-of-<n>.pt``; under
SimComm(n) one file, ``<folder>/checkpoint-sim-<n>-nodes.pt``, holds all n nodes. Each save
replaces the previous one and is atomic: the data goes to a temporary file in the same
folder, is flushed to disk (fsync), then renamed over the old file (``os.replace``), so a
crash during a save leaves the previous checkpoint whole. Use a folder every rank can reach,
given as an absolute path (engines' working directory may differ from the notebook's).

**One save, every rank.** :func:`save_checkpoint` is a collective: rank 0 draws a stamp and
broadcasts it (a message not counted in ``comm.traffic``), and every rank writes it into its
file; it returns once every rank's file is in place (a barrier). :func:`load_checkpoint`
compares the stamps of all ranks (an allgather, also
untracked), so files from two different saves (a crash between the ranks' renames) raise
instead of resuming a mixed state. Call both on every rank at the same iteration; after
``cluster.restart()``, rebuild the objects as at the start and load.

Errors say what is wrong: no file for this rank (and which files the folder holds, e.g.
those of another number of ranks), an unreadable or truncated file, a file of another rank or
world size, names that do not match what was saved.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from pathlib import Path

import torch

__all__ = ["CheckpointError", "checkpoint_path", "load_checkpoint", "save_checkpoint"]

FORMAT = "declearn checkpoint 1"
#: Plain values must be made of these (they load without unpickling arbitrary objects).
_PLAIN = (bool, int, float, complex, str, bytes, type(None), torch.Tensor, torch.Size,
          torch.dtype, torch.device)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not fit this run."""


def checkpoint_path(folder, comm) -> Path:
    """This rank's checkpoint file in ``folder`` (all nodes' under SimComm)."""
    if comm.is_simulator:
        return Path(folder) / f"checkpoint-sim-{comm.size}-nodes.pt"
    return Path(folder) / f"checkpoint-rank{int(comm.rank)}-of-{comm.size}.pt"


def save_checkpoint(folder, comm, **objects) -> Path:
    """Write this rank's checkpoint of ``objects`` atomically; returns the file's path."""
    if not objects:
        raise TypeError("Name what to save, e.g. save_checkpoint(folder, comm, model=model, "
                        "opt=opt, step=step).")
    payload = {name: _snapshot(name, obj) for name, obj in objects.items()}
    path = checkpoint_path(folder, comm)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"format": FORMAT, "simulator": bool(comm.is_simulator), "nodes": comm.size,
              "rank": None if comm.is_simulator else int(comm.rank),
              "stamp": _agreed_stamp(comm), "objects": payload}
    _write_atomically(path, record)
    if not comm.is_simulator:
        with comm.untracked():
            comm.barrier()  # on return, every rank's file is in place
    return path


def load_checkpoint(folder, comm, *, strict: bool = True, **objects) -> dict:
    """Restore ``objects`` in place from this rank's checkpoint in ``folder``; returns the
    saved plain values by name. ``strict``: every restorable object saved must be passed."""
    record = _read_on_every_rank(checkpoint_path(folder, comm), comm)
    saved = record["objects"]
    missing = sorted(set(objects) - set(saved))
    if missing:
        raise CheckpointError(f"The checkpoint holds no {missing}; it holds {sorted(saved)}.")
    restorable = sorted(k for k, (kind, _) in saved.items() if kind != "value")
    forgotten = sorted(set(restorable) - set(objects))
    if strict and forgotten:
        raise CheckpointError(
            f"The checkpoint also holds {forgotten}: pass them too (a model without its "
            "optimizer's state does not resume the same run), or strict=False."
        )
    for name, obj in objects.items():
        _restore(name, obj, *saved[name])
    return {name: value for name, (kind, value) in saved.items() if kind == "value"}


# ---------------------------------------------------------------------- objects
def _snapshot(name: str, obj) -> tuple:
    if isinstance(obj, torch.Generator):
        return "generator", obj.get_state()
    if hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
        return "state", obj.state_dict()
    _check_plain(name, obj)
    return "value", obj


def _check_plain(name: str, value) -> None:
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(name, item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_plain(name, key)
            _check_plain(name, item)
    elif not isinstance(value, _PLAIN):
        raise TypeError(
            f"Cannot checkpoint {name}: a {type(value).__name__}. Save objects with "
            "state_dict()/load_state_dict(), torch Generators, or plain values (numbers, "
            "strings, tensors; lists and dicts of them; numpy arrays via torch.as_tensor)."
        )


def _restore(name: str, obj, kind: str, state) -> None:
    if kind == "generator":
        if not isinstance(obj, torch.Generator):
            raise CheckpointError(f"{name} was saved as a torch.Generator; got "
                                  f"{type(obj).__name__}.")
        obj.set_state(state)
    elif kind == "state":
        if not hasattr(obj, "load_state_dict"):
            raise CheckpointError(f"{name} was saved by its state_dict(); pass an object with "
                                  f"load_state_dict(), got {type(obj).__name__}.")
        obj.load_state_dict(state)
    else:
        raise CheckpointError(f"{name} is a plain value; load_checkpoint returns it (do not "
                              "pass it).")


# ---------------------------------------------------------------------- files
def _write_atomically(path: Path, record: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read(path: Path, comm) -> dict:
    if not path.is_file():
        raise CheckpointError(f"No checkpoint {path.name} in {path.parent}{_others(path)}")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise CheckpointError(
            f"The checkpoint {path} is unreadable (truncated or damaged, or not written by "
            f"save_checkpoint): {type(exc).__name__}: {str(exc)[:200]}. Resume from an "
            "earlier copy or start over."
        ) from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint written by save_checkpoint.")
    here = {"simulator": bool(comm.is_simulator), "nodes": comm.size,
            "rank": None if comm.is_simulator else int(comm.rank)}
    there = {k: record.get(k) for k in here}
    if here != there:
        raise CheckpointError(f"{path} was written by {there}, but this is {here}: was the "
                              "file renamed or copied?")
    return record


def _others(path: Path) -> str:
    found = sorted(p.name for p in path.parent.glob("checkpoint-*.pt")) \
        if path.parent.is_dir() else []
    if not found:
        return " (the folder holds no checkpoint: check the path, absolute on engines)."
    sizes = sorted({m.group(1) for f in found for m in [re.search(r"-of-(\d+)\.pt$", f)] if m}
                   | {m.group(1) for f in found
                      for m in [re.search(r"-sim-(\d+)-nodes\.pt$", f)] if m})
    return (f"; it holds {found[:6]}{' ...' if len(found) > 6 else ''} (saved with "
            f"{' or '.join(sizes)} nodes or ranks). A checkpoint resumes only with the world "
            "size and backend it was saved with.")


# ---------------------------------------------------------------------- one save, every rank
def _agreed_stamp(comm) -> int:
    """A random id of this save, the same on every rank (rank 0's)."""
    stamp = secrets.randbits(52)  # exact in float64, the dtype every backend reduces
    if comm.is_simulator:
        return stamp
    mine = torch.full((1,), float(stamp), dtype=torch.float64, device=comm.device)
    with comm.untracked():
        return int(comm.broadcast(mine, 0).item())


def _read_on_every_rank(path: Path, comm) -> dict:
    """Read this rank's file; then every rank learns (one allgather) whether all could and
    whether all files come from one save, so all raise together instead of some waiting."""
    if comm.is_simulator:
        return _read(path, comm)
    record, error = None, None
    try:
        record = _read(path, comm)
    except CheckpointError as exc:
        error = exc
    mine = torch.tensor([0.0 if error else 1.0, float(record["stamp"]) if record else -1.0],
                        dtype=torch.float64, device=comm.device)
    with comm.untracked():
        rows = comm.allgather(mine).reshape(comm.size, 2).tolist()
    if error is not None:
        raise error
    failed = [rank for rank, (ok, _) in enumerate(rows) if not ok]
    if failed:
        raise CheckpointError(f"Ranks {failed} could not read their checkpoint in "
                              f"{path.parent} (their errors say why); nothing was restored.")
    groups = {}
    for rank, (_, stamp) in enumerate(rows):
        groups.setdefault(stamp, []).append(rank)
    if len(groups) > 1:
        raise CheckpointError(
            f"The ranks' checkpoint files come from {len(groups)} different saves (ranks "
            f"grouped by save: {sorted(groups.values())}): a save did not complete on every "
            "rank. No consistent checkpoint is left in this folder; start over or use a copy."
        )
    return record
