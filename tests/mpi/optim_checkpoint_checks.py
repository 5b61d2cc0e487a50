"""Checkpoints of the declearn.optim optimizers under a real mpiexec: resuming equals the
uninterrupted run.

The scenario (also imported by tests/test_optim_checkpoint.py for the SimComm side): each of
``N`` nodes trains a tiny float32 network on its own data with full-batch gradients plus a
minibatch-like noise drawn from a seeded ``torch.Generator``; the uninterrupted run takes
``STEPS`` steps; the interrupted one stops after ``CUT`` (odd: mid ``tau`` period), saves,
and continues in fresh objects (a model built from *another* seed, a new optimizer) for
``STEPS - CUT`` steps. Both must end with the same parameters (1e-6).

Run as ``mpiexec -n 4 python tests/mpi/optim_checkpoint_checks.py --phase P [--folder F]``:

* ``all``: every optimizer, state_dict() round trip through torch.save in memory and
  save_checkpoint/load_checkpoint into per-rank files of F, plus the bad inputs (another
  rank's state, another world size, a missing or damaged file on one rank, files from two
  different saves). Ends with ``CKPT-OK rank r of N: <checks> checks``.
* ``save`` then ``resume`` (two separate mpiexec jobs, as after ``cluster.restart()``): the
  first trains CUT steps of every optimizer, writes its checkpoints into F and exits; the
  second rebuilds everything, loads, finishes, and compares with an uninterrupted run.
  Ends with ``CKPT-SAVED ...`` / ``CKPT-RESUMED rank r of N: <checks> checks``.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

STEPS, CUT = 11, 5
TOL = 1e-6
D_IN, HIDDEN, CLASSES, M = 5, 6, 3, 12


def optimizers(n: int) -> dict:
    """name -> factory(params, comm): every optimizer of declearn.optim, in settings that
    exercise each piece of state (momentum, tau position, anchors, rounds, relays)."""
    import declearn.optim as O
    from declearn.topology import chain, double_binary_trees, one_peer_exponential, ring

    return {
        "DecentralizedSGD momentum=0.9": lambda p, c: O.DecentralizedSGD(
            p, c, ring(n), lr=0.1, momentum=0.9),
        "DecentralizedSGD one-peer exp": lambda p, c: O.DecentralizedSGD(
            p, c, one_peer_exponential(n), lr=0.1),
        "DecentralizedSGD tau=2 nesterov": lambda p, c: O.DecentralizedSGD(
            p, c, ring(n), lr=0.1, tau=2, momentum=0.5, nesterov=True, weight_decay=1e-2),
        "GossipPGA period=3 momentum": lambda p, c: O.GossipPGA(
            p, c, one_peer_exponential(n), lr=0.1, period=3, momentum=0.9),
        "RelaySGD chain": lambda p, c: O.RelaySGD(p, c, chain(n), lr=0.1),
        "RelaySGD double trees": lambda p, c: O.RelaySGD(p, c, double_binary_trees(n), lr=0.1,
                                                         tau=2, momentum=0.5),
        "LocalSGD tau=2": lambda p, c: O.LocalSGD(p, c, lr=0.1, tau=2),
        "LocalSGD tau=3 BMUF": lambda p, c: O.LocalSGD(p, c, lr=0.1, tau=3, gmf=0.5),
        "EASGD": lambda p, c: O.EASGD(p, c, lr=0.1, tau=2, alpha=0.2),
        "OverlapLocalSGD": lambda p, c: O.OverlapLocalSGD(p, c, lr=0.1, tau=2, alpha=0.5),
        "OverlapLocalSGD gmf": lambda p, c: O.OverlapLocalSGD(p, c, lr=0.1, tau=2, alpha=0.5,
                                                              gmf=0.5),
        "CoCoDSGD": lambda p, c: O.CoCoDSGD(p, c, lr=0.1, tau=2, dampening=0.1, momentum=0.3),
    }


def make_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(D_IN, HIDDEN), torch.nn.Tanh(),
                               torch.nn.Linear(HIDDEN, CLASSES))


def node_data(comm):
    """Node-specific inputs and labels: ``(n, M, D_IN)`` under SimComm, row ``rank`` under
    MPIComm (every rank draws all rows from the same seed)."""
    gen = torch.Generator().manual_seed(7)
    n = comm.size
    X = torch.randn(n, M, D_IN, generator=gen) + torch.arange(n, dtype=torch.float32)[:, None,
                                                                                      None]
    y = torch.randint(0, CLASSES, (n, M), generator=gen)
    return (X, y) if comm.is_simulator else (X[comm.rank], y[comm.rank])


def build(name: str, comm, seed: int):
    """A model (stacked under SimComm), its optimizer and the noise generator."""
    from declearn.optim import StackedModel

    net = make_net(seed)
    model = StackedModel(net, comm.size) if comm.is_simulator else net
    noise = torch.Generator().manual_seed(seed + (0 if comm.is_simulator else comm.rank))
    return model, optimizers(comm.size)[name](model.parameters(), comm), noise


def train(model, opt, noise, comm, steps: int) -> None:
    X, y = node_data(comm)
    for _ in range(steps):
        opt.zero_grad()
        out = model(X + 0.1 * torch.randn(X.shape, generator=noise))
        F.cross_entropy(out.flatten(0, -2), y.flatten(), reduction="sum").backward()
        opt.step()
        opt.average()


def uninterrupted(name: str, comm) -> torch.Tensor:
    model, opt, noise = build(name, comm, seed=0)
    train(model, opt, noise, comm, STEPS)
    opt.finish()
    return opt.x.clone()


def resumed_in_memory(name: str, comm) -> torch.Tensor:
    """The usual PyTorch recipe: torch.save({"model": ..., "opt": ...}) at CUT, then new objects."""
    model, opt, noise = build(name, comm, seed=0)
    train(model, opt, noise, comm, CUT)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "noise": noise.get_state()}, buffer)
    del model, opt, noise
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    model, opt, noise = build(name, comm, seed=1)  # another initial model: all must come back
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    noise.set_state(saved["noise"])
    train(model, opt, noise, comm, STEPS - CUT)
    opt.finish()
    return opt.x.clone()


def save_at_cut(name: str, comm, folder) -> None:
    from declearn.optim.checkpoint import save_checkpoint

    model, opt, noise = build(name, comm, seed=0)
    train(model, opt, noise, comm, CUT)
    save_checkpoint(folder, comm, model=model, opt=opt, noise=noise, step=CUT)
    opt.finish()


def resume_from_files(name: str, comm, folder) -> torch.Tensor:
    from declearn.optim.checkpoint import load_checkpoint

    model, opt, noise = build(name, comm, seed=1)
    step = load_checkpoint(folder, comm, model=model, opt=opt, noise=noise)["step"]
    train(model, opt, noise, comm, STEPS - step)
    opt.finish()
    return opt.x.clone()


def folder_of(base, name: str) -> Path:
    return Path(base) / name.replace(" ", "_").replace("=", "")


# ---------------------------------------------------------------------- under mpiexec
def main():
    from mpi4py import MPI

    from declearn.comm.mpi import MPIComm

    phase = sys.argv[sys.argv.index("--phase") + 1]
    base = sys.argv[sys.argv.index("--folder") + 1] if "--folder" in sys.argv else None
    world = MPI.COMM_WORLD
    rank, n = world.Get_rank(), world.Get_size()
    checks = [0]

    def check(cond, what):
        checks[0] += 1
        if not cond:
            raise AssertionError(f"rank {rank}: {what}")

    def raises(fn, *words):
        try:
            fn()
        except ValueError as exc:  # CheckpointError is one
            text = str(exc)
            check(all(w in text for w in words), f"error lacks {words}: {text}")
            return
        check(False, f"no error; expected one saying {words}")

    t0 = time.monotonic()
    comm = MPIComm(timeout=30)
    names = list(optimizers(n))

    def compare(name, x, how):
        ref = uninterrupted(name, comm)
        err = float((x - ref).abs().max())
        check(err <= TOL, f"{name}: resumed ({how}) differs from the uninterrupted run by "
                          f"{err:.3g}")
        print(f"rank {rank} {name} ({how}): max difference {err:.1e}", flush=True)

    if phase == "save":
        for name in names:
            save_at_cut(name, comm, folder_of(base, name))
        comm.barrier()
        print(f"CKPT-SAVED rank {rank} of {n}: {len(names)} checkpoints, "
              f"{time.monotonic() - t0:.1f} s", flush=True)
        return
    if phase == "resume":
        for name in names:
            compare(name, resume_from_files(name, comm, folder_of(base, name)), "new job")
        comm.barrier()
        print(f"CKPT-RESUMED rank {rank} of {n}: {checks[0]} checks, "
              f"{time.monotonic() - t0:.1f} s", flush=True)
        return
    if phase != "all":
        raise ValueError(f"unknown --phase {phase!r}; use all, save or resume")

    for name in names:
        compare(name, resumed_in_memory(name, comm), "torch.save in memory")
    from declearn.optim.checkpoint import load_checkpoint, save_checkpoint

    for name in names:
        folder = folder_of(base, name)
        save_at_cut(name, comm, folder)
        check(sorted(p.name for p in folder.iterdir()) ==
              [f"checkpoint-rank{r}-of-{n}.pt" for r in range(n)],
              f"{name}: files {sorted(os.listdir(folder))}")
        compare(name, resume_from_files(name, comm, folder), "per-rank files")

    # another rank's state
    name = names[0]
    model, opt, noise = build(name, comm, seed=0)
    train(model, opt, noise, comm, 1)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    blobs = world.allgather(buffer.getvalue())
    neighbor = torch.load(io.BytesIO(blobs[(rank + 1) % n]), weights_only=True)
    raises(lambda: opt.load_state_dict(neighbor), "rank", f"saved {(rank + 1) % n}",
           f"here {rank}")

    folder = folder_of(base, names[1])
    # another world size: ranks 0 and 1 form a job of 2 and look for files of 4
    sub = world.Split(0 if rank < 2 else 1, rank)
    small = MPIComm(sub, timeout=30)
    model, opt, noise = build(names[1], small, seed=1)
    raises(lambda: load_checkpoint(folder, small, model=model, opt=opt, noise=noise),
           f"of-{n}.pt", "world size", f"checkpoint-rank{small.rank}-of-2.pt")
    world.Barrier()

    # a missing file on rank 2 only: every rank raises, none waits
    model, opt, noise = build(names[1], comm, seed=1)
    if rank == 2:
        (folder / f"checkpoint-rank2-of-{n}.pt").unlink()
    world.Barrier()
    t1 = time.monotonic()
    raises(lambda: load_checkpoint(folder, comm, model=model, opt=opt, noise=noise),
           *(("No checkpoint", "checkpoint-rank2") if rank == 2 else ("Ranks [2]",)))
    check(time.monotonic() - t1 < 10, "the error took too long")

    # a damaged file on rank 1 only
    folder = folder_of(base, names[2])
    model, opt, noise = build(names[2], comm, seed=1)
    if rank == 1:
        path = folder / f"checkpoint-rank1-of-{n}.pt"
        path.write_bytes(path.read_bytes()[:200])
    world.Barrier()
    raises(lambda: load_checkpoint(folder, comm, model=model, opt=opt, noise=noise),
           *(("unreadable",) if rank == 1 else ("Ranks [1]",)))

    # files from two saves: rank 3 keeps an older one
    folder, older = folder_of(base, "mixed"), folder_of(base, "mixed-older")
    model, opt, noise = build(names[0], comm, seed=0)
    save_checkpoint(older, comm, model=model, opt=opt)
    save_checkpoint(folder, comm, model=model, opt=opt)
    if rank == 3:
        os.replace(older / f"checkpoint-rank3-of-{n}.pt", folder / f"checkpoint-rank3-of-{n}.pt")
    world.Barrier()
    raises(lambda: load_checkpoint(folder, comm, model=model, opt=opt), "different saves",
           "[3]")

    comm.barrier()
    print(f"CKPT-OK rank {rank} of {n}: {checks[0]} checks, {time.monotonic() - t0:.1f} s",
          flush=True)


if __name__ == "__main__":
    from harness import run_or_abort  # this folder is sys.path[0] when run as a script

    run_or_abort(main, "CKPT")
