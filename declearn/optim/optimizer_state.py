r"""``state_dict()`` / ``load_state_dict()`` of the optimizers of :mod:`declearn.optim`.

A resumed run equals the uninterrupted one only if everything the next steps read is
restored. For :class:`~declearn.optim.local_sgd.PeriodicSyncSGD` and its subclasses that is

* ``x``: the flat parameters (restored too: building an optimizer sets every node's
  parameters to node 0's, which would undo a ``model.load_state_dict`` made before);
* ``velocity``: the local momentum buffer ``v`` (None before the first step);
* the hyperparameters of the parameter group (``lr``, ``momentum``, ... and whatever an lr
  scheduler added), restored as ``torch.optim`` does;
* the synchronisation rule's state (:mod:`declearn.optim.sync_state`): the position in the
  ``tau`` period, anchors, block momentum, snapshots, the dynamic topology's round, the relay
  buffers; an average still in flight is completed first.

plus what identifies the run, checked on loading: the optimizer class, the rule and its
parameters (``tau``, ``gmf``, ``alpha``, the topology or tree), the number of nodes, the rank
(MPIComm; under SimComm one state holds all n nodes), the parameter shapes and dtype. A state
from another run raises a ValueError naming what differs, and nothing is changed.

Each rank's state is its own: under MPIComm every rank saves and loads its own (see
:func:`declearn.optim.checkpoint.save_checkpoint`, which does the bookkeeping).
"""

from __future__ import annotations

import torch

from declearn.optim.sync_state import load_rule_state, rule_identity, rule_state

__all__ = ["FORMAT", "load_optimizer_state", "optimizer_state"]

#: Marks a state written by this module (and its version).
FORMAT = "declearn.optim state 1"


def _where(comm) -> dict:
    return {"simulator": bool(comm.is_simulator), "nodes": int(comm.size),
            "rank": None if comm.is_simulator else int(comm.rank)}


def optimizer_state(opt) -> dict:
    """A snapshot of ``opt`` (a PeriodicSyncSGD) as plain data and tensor copies."""
    sync = rule_state(opt.rule)  # first: it may complete an average in flight
    group = opt.param_groups[0]
    velocity = opt._velocity
    return {
        "format": FORMAT,
        "optimizer": type(opt).__name__,
        **_where(opt.comm),
        "sync_rule": rule_identity(opt.rule),
        "shapes": [tuple(shape) for shape in opt.flat.shapes],
        "hyperparameters": {k: v for k, v in group.items() if k != "params"},
        "x": opt.flat.flat.detach().clone(),
        "velocity": None if velocity is None else velocity.clone(),
        "sync": sync,
    }


def load_optimizer_state(opt, state) -> None:
    """Check ``state`` against ``opt`` (see the module docstring), then restore it."""
    _check_header(opt, state)
    flat = opt.flat.flat
    x = _checked_tensor(state["x"], flat, "x (the parameters)")
    velocity = None if state["velocity"] is None else \
        _checked_tensor(state["velocity"], flat, "velocity (the momentum buffer)")
    hyper = state["hyperparameters"]
    if not isinstance(hyper, dict) or "lr" not in hyper:
        raise ValueError("The saved hyperparameters must be a dict with at least 'lr'.")
    load_rule_state(opt.rule, state["sync"], flat)  # checks everything before setting
    with torch.no_grad():
        opt.flat.load(x)
    opt._velocity = velocity
    opt.param_groups[0].update({k: v for k, v in hyper.items() if k != "params"})


def _check_header(opt, state) -> None:
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"This is not the state of a declearn.optim optimizer (got {got}): pass what "
            f"{type(opt).__name__}.state_dict() returned (torch.optim optimizers' states do "
            "not fit)."
        )
    name = type(opt).__name__
    if state["optimizer"] != name:
        raise ValueError(
            f"The state was saved from a {state['optimizer']} optimizer; this is a {name}. "
            f"Build a {state['optimizer']} with the same settings to resume."
        )
    _compare("run", _where(opt.comm), {k: state[k] for k in ("simulator", "nodes", "rank")},
             "the same backend, number of nodes and rank (each rank loads its own state)")
    _compare("synchronisation", rule_identity(opt.rule), state["sync_rule"],
             "the same tau, gmf, alpha, period and topology or tree")
    shapes = [tuple(shape) for shape in opt.flat.shapes]
    if [tuple(shape) for shape in state["shapes"]] != shapes:
        raise ValueError(
            f"The saved parameters have shapes {state['shapes']}, this model's are {shapes}: "
            "the state is from another model (or another number of stacked nodes)."
        )


def _compare(what: str, mine: dict, saved: dict, needs: str) -> None:
    diff = [f"{k}: saved {saved.get(k)!r}, here {mine.get(k)!r}"
            for k in sorted(set(mine) | set(saved)) if mine.get(k) != saved.get(k)]
    if diff:
        raise ValueError(f"The state does not fit this optimizer ({what} differs: "
                         f"{'; '.join(diff)}). Resuming needs {needs}.")


def _checked_tensor(value, like: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.shape != like.shape:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"The saved {name} has shape {shape}, this optimizer's is "
                         f"{tuple(like.shape)}.")
    if value.dtype != like.dtype:
        raise ValueError(f"The saved {name} is {value.dtype}, the parameters are {like.dtype}: "
                         f"convert the model to {value.dtype} before building the optimizer.")
    return value.to(like.device, copy=True)
