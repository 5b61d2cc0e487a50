r"""The state of a synchronisation rule, as plain data: what a checkpoint of the optimizers
of :mod:`declearn.optim` must hold besides the parameters and the momentum buffer.

A rule (:class:`~declearn.algorithms.local_sgd.SyncRule`) called ``calls`` times so far
synchronises at the next call iff ``(calls + 1) % tau == 0``, so ``calls`` is the position in
the ``tau`` period. Besides it, by rule:

==========================  ==============================================================
rule                        state
==========================  ==============================================================
ModelAveraging              ``calls``
BlockMomentum (BMUF)        ``calls``, the anchor ``z``, the block momentum ``u``
ElasticAveraging (EASGD)    ``calls``, the centre ``z`` (in-flight allreduce completed)
OverlapAveraging            ``calls``, ``z`` (in-flight allreduce completed), ``u``
CoCoDAveraging              ``calls``, ``z`` (in-flight allreduce completed), snapshot ``s``
GossipAveraging (DSGD)      ``calls``, ``rounds`` r (the next mix uses ``topology.at(r)``)
PeriodicGlobalAveraging     ``calls``, ``rounds`` r (a global mean when
(Gossip-PGA)                ``(r + 1) % period == 0``, else a mix with ``topology.at(r)``)
RelayAveraging (RelaySGD)   ``calls``, the anchor ``z``, per tree: the relay ``steps`` and
                            the last messages ``received`` (and their sum over neighbors)
==========================  ==============================================================

**In-flight averages.** The overlap rules keep a nonblocking allreduce in flight between two
synchronisations. :func:`rule_state` completes it first (``rule.finish()``: its result
becomes ``z``, exactly what the next synchronisation would have waited for, so the run is
unchanged). That wait is a communication: take the state on every rank at the same iteration.

:func:`load_rule_state` checks that the state was taken from the same kind of rule with the
same parameters (``tau``, ``gmf``, ``alpha``, ``period``, topology or tree) and with tensors of
the shapes this rule works on, and says what differs.
"""

from __future__ import annotations

import torch

from declearn.algorithms.local_sgd import (
    BlockMomentum,
    CoCoDAveraging,
    ElasticAveraging,
    ModelAveraging,
    OverlapAveraging,
    SyncRule,
)

__all__ = ["known_rule", "load_rule_state", "rule_identity", "rule_state"]

#: Tensors a rule may hold, by attribute name (None until first set).
_TENSORS = ("z", "u", "s")
#: Counters, by attribute name.
_COUNTERS = ("calls", "rounds")


#: The rules whose state this module knows how to save (their attributes are those above);
#: :mod:`declearn.optim.gossip` adds its two with :func:`known_rule`.
_KNOWN_RULES: set = {ModelAveraging, BlockMomentum, ElasticAveraging, OverlapAveraging,
                     CoCoDAveraging}


def known_rule(cls: type) -> type:
    """Class decorator: ``cls`` keeps its state in the attributes this module saves."""
    _KNOWN_RULES.add(cls)
    return cls


def _check_known(rule: SyncRule) -> None:
    if type(rule) not in _KNOWN_RULES:
        raise TypeError(
            f"Cannot checkpoint the synchronisation rule {type(rule).__name__}: only the rules "
            "of declearn.algorithms.local_sgd, declearn.optim.gossip and declearn.optim.pga are "
            "known. Give your rule state_dict() and load_state_dict(state) methods."
        )


def rule_identity(rule: SyncRule) -> dict:
    """What must be equal for a state to fit ``rule``: its class, parameters and graph."""
    ident = {"rule": type(rule).__name__, "params": dict(rule.params())}
    topology = getattr(rule, "topology", None)
    if topology is not None:
        ident["graph"] = (getattr(topology, "name", type(topology).__name__), topology.n,
                          getattr(topology, "period", None))
    relay = getattr(rule, "relay", None)
    if relay is not None:
        ident["graph"] = tuple((part.name, part.n) for part in relay.parts)
    return ident


def rule_state(rule: SyncRule) -> dict:
    """A snapshot of ``rule``'s state (tensors cloned: later steps do not change it)."""
    if hasattr(rule, "state_dict"):
        return {"custom": rule.state_dict()}
    _check_known(rule)
    if getattr(rule, "pending", None) is not None:
        rule.finish()
    state = {name: getattr(rule, name) for name in _COUNTERS if hasattr(rule, name)}
    for name in _TENSORS:
        if hasattr(rule, name):
            value = getattr(rule, name)
            state[name] = None if value is None else value.detach().clone()
    relay = getattr(rule, "relay", None)
    if relay is not None:
        state["channels"] = [_channel_state(ch) for ch in relay.channels]
    return state


def _channel_state(channel) -> dict:
    received = channel.received
    return {"steps": channel.steps,
            "received": None if received is None else received.clone(),
            "received_sum": None if received is None else channel.received_sum.clone()}


def load_rule_state(rule: SyncRule, state: dict, like: torch.Tensor) -> None:
    """Set ``rule``'s state to ``state`` (from :func:`rule_state` of an equal rule); ``like``
    is the flat parameter buffer (its shape, dtype and device are the tensors')."""
    if hasattr(rule, "load_state_dict"):
        rule.load_state_dict(state["custom"])
        return
    _check_known(rule)
    if getattr(rule, "pending", None) is not None:
        rule.finish()  # an allreduce in flight must complete before its result is replaced
    expected = set(rule_state_names(rule))
    if set(state) != expected:
        raise ValueError(
            f"The saved state of the rule holds {sorted(state)}, but {type(rule).__name__} "
            f"needs {sorted(expected)}: it was not saved from this kind of optimizer."
        )
    tensors = {name: _tensor(state[name], like, name) for name in _TENSORS if name in state}
    channels = None
    if "channels" in state:
        channels = _checked_channels(rule.relay, state["channels"], like)
    for name in _COUNTERS:
        if name in state:
            setattr(rule, name, _counter(state[name], name))
    for name, value in tensors.items():
        setattr(rule, name, value)
    if channels is not None:
        for channel, saved in zip(rule.relay.channels, channels):
            channel.steps, channel.received, channel.received_sum = saved


def rule_state_names(rule: SyncRule) -> list:
    names = [name for name in _COUNTERS + _TENSORS if hasattr(rule, name)]
    return names + (["channels"] if getattr(rule, "relay", None) is not None else [])


def _counter(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"The saved counter {name!r} must be an integer >= 0, got {value!r}.")
    return value


def _tensor(value, like: torch.Tensor, name: str, shape: tuple | None = None):
    """A private copy of a saved tensor on ``like``'s device, after checking it fits."""
    if value is None:
        return None
    shape = tuple(like.shape) if shape is None else shape
    if not isinstance(value, torch.Tensor):
        raise ValueError(
            f"The saved {name!r} must be a tensor or None, got {type(value).__name__}: the "
            "checkpoint was not written by a declearn optimizer's state_dict()."
        )
    if tuple(value.shape) != shape:
        raise ValueError(
            f"The saved {name!r} has shape {tuple(value.shape)}, but this optimizer needs "
            f"{shape}: the checkpoint is from another model or another number of nodes."
        )
    if value.dtype != like.dtype:
        raise ValueError(
            f"The saved {name!r} is {value.dtype}, but the parameters are {like.dtype}: "
            f"convert the model to {value.dtype} before building the optimizer."
        )
    return value.to(like.device, copy=True)


def _checked_channels(relay, saved, like: torch.Tensor) -> list:
    if not isinstance(saved, list) or len(saved) != len(relay.channels):
        raise ValueError(
            f"The saved relay state has {len(saved) if isinstance(saved, list) else '?'} "
            f"trees, this relay has {len(relay.channels)}."
        )
    lead = tuple(like.shape[:-1])
    # A TreePair sends the even entries over its first tree and the odd over its second.
    widths = [(like.shape[-1] + 1) // 2, like.shape[-1] // 2] if relay.is_pair \
        else [like.shape[-1]]
    out = []
    for channel, state, width in zip(relay.channels, saved, widths):
        if set(state) != {"steps", "received", "received_sum"}:
            raise ValueError(f"The saved relay state of a tree holds {sorted(state)}.")
        packed = lead + (width + 1,)
        received = _tensor(state["received"], like, "received",
                           lead + (channel.slots, width + 1))
        total = _tensor(state["received_sum"], like, "received_sum", packed)
        if (received is None) != (total is None):
            raise ValueError("The saved relay state has received but no received_sum.")
        out.append((_counter(state["steps"], "steps"), received, total))
    return out
