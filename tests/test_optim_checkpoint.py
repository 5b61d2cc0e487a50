"""Checkpoints of the declearn.optim optimizers: a run saved at an odd step and resumed in
fresh objects equals the uninterrupted run (float32, 1e-6), under SimComm here and under a
real ``mpiexec -n 4`` (tests/mpi/optim_checkpoint_checks.py, whose scenario this file shares:
every optimizer, a tiny network, node-specific data, a seeded noise generator).

The oracle is always the uninterrupted run, never the state that was saved. Also: momentum and
Local SGD's tau position saved mid-period with torch.save, state_dict() as a snapshot, the
checkpoint files (names, atomic replacement, errors), and bad inputs to load_state_dict.
"""

from __future__ import annotations

import importlib.util
import io
import pickle
import re

import pytest
import torch
from ipyparallel import interactive

import declearn.optim as O
from declearn.comm import SimComm
from declearn.topology import exponential, ring

from mpi_helpers import MPI_SCRIPTS, needs_mpi, run_mpi  # tests/ is on sys.path

_spec = importlib.util.spec_from_file_location(
    "optim_checkpoint_checks", MPI_SCRIPTS / "optim_checkpoint_checks.py")
S = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(S)

N = 4
NAMES = list(S.optimizers(N))


def sim():
    return SimComm(N, dtype=torch.float32)


def max_diff(a, b) -> float:
    return float((a - b).abs().max())


# ---------------------------------------------------------------------- resume == uninterrupted
@pytest.mark.parametrize("name", NAMES)
def test_resume_in_fresh_objects_equals_the_uninterrupted_run(name):
    ref = S.uninterrupted(name, sim())
    x = S.resumed_in_memory(name, sim())
    assert max_diff(x, ref) <= S.TOL, f"{name}: resumed run is off by {max_diff(x, ref):.3g}"
    # the comparison proves something: the nodes differ and the run moved
    assert max_diff(ref[0], ref[1]) > 1e-4
    assert max_diff(ref, S.uninterrupted(name, sim())) == 0, "the oracle is not deterministic"


def _torch_save_run(make_opt, steps, cut=None):
    """The usual PyTorch recipe on 4 stacked nets: torch.save of model + optimizer at ``cut``."""
    comm = sim()
    model = O.StackedModel(S.make_net(0), N)
    opt = make_opt(model.parameters(), comm)
    noise = torch.Generator().manual_seed(0)
    S.train(model, opt, noise, comm, cut if cut is not None else steps)
    if cut is None:
        return opt.x.clone()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model = O.StackedModel(S.make_net(0), N)
    opt = make_opt(model.parameters(), comm)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    S.train(model, opt, noise, comm, steps - cut)
    return opt.x.clone()


@pytest.mark.parametrize("make_opt", [
    lambda p, c: O.DecentralizedSGD(p, c, ring(N), lr=0.1, momentum=0.9),
    lambda p, c: O.LocalSGD(p, c, lr=0.1, tau=2),
], ids=["DecentralizedSGD(momentum=0.9)", "LocalSGD(tau=2)"])
@pytest.mark.parametrize("cut", [1, 3, 7])
def test_momentum_and_tau_resumed_at_odd_steps(make_opt, cut):
    ref = _torch_save_run(make_opt, 12)
    x = _torch_save_run(make_opt, 12, cut)
    assert max_diff(x, ref) <= 1e-6, f"resumed at step {cut}: off by {max_diff(x, ref):.3g}"


def test_state_dict_is_a_snapshot():
    """A state taken at step 3 and loaded only after the original went on (no torch.save in
    between) still resumes from step 3: relay buffers, anchors and momentum are reused in
    place by later steps, so the state must hold copies."""
    comm = sim()
    for name in ("RelaySGD chain", "DecentralizedSGD momentum=0.9", "LocalSGD tau=3 BMUF",
                 "OverlapLocalSGD gmf"):
        model, opt, noise = S.build(name, comm, 0)
        S.train(model, opt, noise, comm, 3)
        state, noise_state = opt.state_dict(), noise.get_state()
        S.train(model, opt, noise, comm, 3)
        model2, opt2, noise2 = S.build(name, comm, 1)
        opt2.load_state_dict(state)
        noise2.set_state(noise_state)
        S.train(model2, opt2, noise2, comm, 3)
        assert max_diff(opt2.x, opt.x) <= S.TOL, name


def test_overlap_state_completes_the_average_in_flight():
    comm = sim()
    model, opt, noise = S.build("OverlapLocalSGD", comm, 0)
    S.train(model, opt, noise, comm, 3)
    assert opt.rule.pending is not None
    state = opt.state_dict()
    assert opt.rule.pending is None and state["sync"]["z"] is not None


# ---------------------------------------------------------------------- the checkpoint files
def test_checkpoint_files_resume_and_hold_all_nodes_in_one(tmp_path):
    from declearn.optim.checkpoint import load_checkpoint, save_checkpoint

    name = "RelaySGD double trees"
    ref = S.uninterrupted(name, sim())
    comm = sim()
    model, opt, noise = S.build(name, comm, 0)
    S.train(model, opt, noise, comm, S.CUT)
    path = save_checkpoint(tmp_path, comm, model=model, opt=opt, noise=noise, step=S.CUT)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"checkpoint-sim-{N}-nodes.pt"]
    assert path == tmp_path / f"checkpoint-sim-{N}-nodes.pt"
    model, opt, noise = S.build(name, comm, 1)
    saved = load_checkpoint(tmp_path, comm, model=model, opt=opt, noise=noise)
    assert saved == {"step": S.CUT}
    S.train(model, opt, noise, comm, S.STEPS - saved["step"])
    assert max_diff(opt.x, ref) <= S.TOL


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path):
    from declearn.optim.checkpoint import load_checkpoint, save_checkpoint

    class Unpicklable:  # state_dict() holds a local function: torch.save fails mid-file
        def state_dict(self):
            return {"big": torch.zeros(1000), "f": lambda: 0}

        def load_state_dict(self, state):
            pass

    comm = sim()
    model, _, _ = S.build("LocalSGD tau=2", comm, 0)
    save_checkpoint(tmp_path, comm, model=model, step=1)
    before = (tmp_path / f"checkpoint-sim-{N}-nodes.pt").read_bytes()
    with pytest.raises((AttributeError, pickle.PicklingError)):
        save_checkpoint(tmp_path, comm, model=model, step=2, other=Unpicklable())
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"checkpoint-sim-{N}-nodes.pt"]
    assert (tmp_path / f"checkpoint-sim-{N}-nodes.pt").read_bytes() == before
    assert load_checkpoint(tmp_path, comm, model=model) == {"step": 1}


def test_checkpoint_errors(tmp_path):
    from declearn.optim.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    comm = sim()
    model, opt, noise = S.build("LocalSGD tau=2", comm, 0)
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_checkpoint(tmp_path / "nothing", comm, model=model)
    save_checkpoint(tmp_path, comm, model=model, opt=opt, step=3)
    # another number of nodes: the file of 4 is named, and what to do
    comm3 = SimComm(3, dtype=torch.float32)
    model3, opt3, _ = S.build("LocalSGD tau=2", comm3, 0)
    with pytest.raises(CheckpointError, match=r"checkpoint-sim-4-nodes\.pt.*4 nodes.*world size"):
        load_checkpoint(tmp_path, comm3, model=model3, opt=opt3)
    with pytest.raises(CheckpointError, match=r"also holds \['opt'\]"):
        load_checkpoint(tmp_path, comm, model=model)
    assert load_checkpoint(tmp_path, comm, model=model, strict=False) == {"step": 3}
    with pytest.raises(CheckpointError, match=r"holds no \['noise'\]"):
        load_checkpoint(tmp_path, comm, model=model, opt=opt, noise=noise)
    with pytest.raises(CheckpointError, match="plain value"):
        load_checkpoint(tmp_path, comm, model=model, opt=opt, step=model)
    with pytest.raises(TypeError, match=r"numpy arrays via torch\.as_tensor"):
        save_checkpoint(tmp_path, comm, model=model, table=object())
    with pytest.raises(TypeError, match="Name what to save"):
        save_checkpoint(tmp_path, comm)
    path = tmp_path / f"checkpoint-sim-{N}-nodes.pt"
    path.write_bytes(path.read_bytes()[:300])  # a truncated file
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(tmp_path, comm, model=model, opt=opt)
    torch.save({"model": model.state_dict()}, path)  # someone else's file under our name
    with pytest.raises(CheckpointError, match="not a checkpoint written by save_checkpoint"):
        load_checkpoint(tmp_path, comm, model=model, opt=opt)


# ---------------------------------------------------------------------- bad states
def _state(name, comm=None, steps=3):
    comm = comm or sim()
    model, opt, noise = S.build(name, comm, 0)
    S.train(model, opt, noise, comm, steps)
    return opt.state_dict()


def test_load_state_dict_says_what_does_not_fit():
    comm = sim()
    _, opt, _ = S.build("LocalSGD tau=2", comm, 0)
    x0 = opt.x.clone()
    with pytest.raises(ValueError, match=r"saved from a DecentralizedSGD optimizer; this is a "
                                         r"LocalSGD"):
        opt.load_state_dict(_state("DecentralizedSGD momentum=0.9"))
    with pytest.raises(ValueError, match=r"tau.*saved 3.*here 2|saved .*'tau': 3"):
        opt.load_state_dict(_state("LocalSGD tau=3 BMUF") | {"optimizer": "LocalSGD"})
    with pytest.raises(ValueError, match=r"nodes: saved 3, here 4"):
        opt.load_state_dict(_state("LocalSGD tau=2", SimComm(3, dtype=torch.float32)))
    with pytest.raises(ValueError, match=r"not the state of a declearn\.optim optimizer"):
        opt.load_state_dict(torch.optim.SGD(S.make_net(0).parameters(), lr=0.1).state_dict())
    # another model: the shapes are named
    other = O.StackedModel(torch.nn.Linear(S.D_IN, 2), N)
    bad = O.LocalSGD(other.parameters(), comm, lr=0.1, tau=2)
    with pytest.raises(ValueError, match=r"shapes .*\(4, 6, 5\).*this model's are .*\(4, 2, 5\)"):
        bad.load_state_dict(_state("LocalSGD tau=2"))
    # another topology, another dtype, a damaged tensor
    _, dsgd, _ = S.build("DecentralizedSGD momentum=0.9", comm, 0)
    other_topo = O.DecentralizedSGD(S.build("DecentralizedSGD momentum=0.9", comm, 0)[0]
                                    .parameters(), comm, exponential(N), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"graph: saved \('ring'"):
        other_topo.load_state_dict(_state("DecentralizedSGD momentum=0.9"))
    state = _state("DecentralizedSGD momentum=0.9")
    with pytest.raises(ValueError, match=r"velocity .*torch.float64.*float32"):
        dsgd.load_state_dict(state | {"velocity": state["velocity"].double()})
    relay_state = _state("RelaySGD chain")
    relay_state["sync"]["channels"][0]["received"] = torch.zeros(3)
    _, relay, _ = S.build("RelaySGD chain", comm, 0)
    with pytest.raises(ValueError, match=r"'received' has shape \(3,\)"):
        relay.load_state_dict(relay_state)
    bmuf_state = _state("LocalSGD tau=3 BMUF")
    bmuf_state["sync"]["z"] = bmuf_state["sync"]["z"].tolist()
    _, bmuf, _ = S.build("LocalSGD tau=3 BMUF", comm, 0)
    with pytest.raises(ValueError, match=r"saved 'z' must be a tensor or None, got list"):
        bmuf.load_state_dict(bmuf_state)
    # nothing was changed by the failed loads
    assert torch.equal(opt.x, x0) and opt.rule.calls == 0


# ---------------------------------------------------------------------- under mpiexec
def _ok(out, word, n=4):
    ranks = sorted(int(r) for r, size in re.findall(rf"{word} rank (\d+) of (\d+)", out))
    assert ranks == list(range(n)), out[-4000:]


@pytest.mark.mpi
@needs_mpi
def test_checkpoints_under_mpiexec_4(tmp_path):
    """Every optimizer: in-memory state and per-rank files, resumed == uninterrupted on 4
    real ranks; another rank's state, another world size, a missing or damaged file on one
    rank, files of two saves: every rank raises, none hangs."""
    out = run_mpi("optim_checkpoint_checks.py", 4, "--phase", "all", "--folder", str(tmp_path),
                  timeout=240)
    _ok(out, "CKPT-OK")
    assert out.count("max difference") == 4 * 2 * len(NAMES)


@pytest.mark.mpi
@needs_mpi
def test_checkpoints_resume_in_a_new_mpi_job(tmp_path):
    """Save in one mpiexec job, resume in another (what cluster.restart() amounts to)."""
    out = run_mpi("optim_checkpoint_checks.py", 4, "--phase", "save", "--folder", str(tmp_path),
                  timeout=180)
    _ok(out, "CKPT-SAVED")
    out = run_mpi("optim_checkpoint_checks.py", 4, "--phase", "resume", "--folder",
                  str(tmp_path), timeout=180)
    _ok(out, "CKPT-RESUMED")


# ---------------------------------------------------------------------- after cluster.restart()
CLUSTER_CASES = ["DecentralizedSGD momentum=0.9", "LocalSGD tau=2", "OverlapLocalSGD gmf",
                 "RelaySGD double trees"]


@interactive
def _engine_save(script, folder, names):
    import importlib.util

    from declearn.comm.mpi import MPIComm

    spec = importlib.util.spec_from_file_location("optim_checkpoint_checks", script)
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    comm = MPIComm(timeout=30)
    for name in names:
        checks.save_at_cut(name, comm, checks.folder_of(folder, name))
    return rank  # noqa: F821  (the engine set-up defines it)


@interactive
def _engine_resume(script, folder, names):
    import importlib.util

    from declearn.comm.mpi import MPIComm

    spec = importlib.util.spec_from_file_location("optim_checkpoint_checks", script)
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    comm = MPIComm(timeout=30)
    errors = {}
    for name in names:
        x = checks.resume_from_files(name, comm, checks.folder_of(folder, name))
        errors[name] = float((x - checks.uninterrupted(name, comm)).abs().max())
    return errors


@pytest.mark.cluster
@pytest.mark.slow
@needs_mpi
def test_resume_after_cluster_restart(tmp_path):
    """Real engines save their per-rank files; cluster.restart() ends them (memory lost); the
    new engines rebuild, load their own file and finish like the uninterrupted run."""
    import declearn.cluster as dc

    script = str(MPI_SCRIPTS / "optim_checkpoint_checks.py")
    cluster = dc.start(4, profile_dir=str(tmp_path / "profile_ckpt"), timeout=120,
                       activate=False)
    try:
        assert cluster.view.apply_sync(_engine_save, script, str(tmp_path),
                                       CLUSTER_CASES) == [0, 1, 2, 3]
        cluster.restart()
        errors = cluster.view.apply_sync(_engine_resume, script, str(tmp_path), CLUSTER_CASES)
    finally:
        cluster.stop()
    assert len(errors) == 4
    for rank, errs in enumerate(errors):
        for name, err in errs.items():
            assert err <= S.TOL, f"rank {rank}, {name}: resumed run is off by {err:.3g}"
