"""Functions that run *on the engines*, shipped by value.

They are decorated with ``ipyparallel.interactive``: ipyparallel then sends their code, not a
reference to this module, and they run with the engine's user namespace as globals. So each
imports what it needs inside its body, and names it assigns with ``globals()`` are what a
``%%px`` cell sees. Importing this module on an engine is never needed, which keeps start-up
free of ``import declearn`` (and so of ``import torch``, about 2 s per engine on a laptop).
"""

from __future__ import annotations

from ipyparallel import interactive

__all__ = ["setup_engine", "resync_engine", "engine_identity"]


@interactive
def setup_engine(gpus="auto"):
    """Give this engine ``rank``, ``size``, ``local_rank`` and ``device`` (a string such as
    ``"cpu"`` or ``"cuda:1"``) in its namespace, and pin one GPU by local rank where GPUs exist.

    ``gpus="auto"`` imports torch only when the host shows a GPU driver (``/dev/nvidiactl``,
    ``/dev/kfd``), so CPU-only engines start without torch; ``True`` requires a GPU; ``False``
    never touches CUDA. Each engine's CPU threads are set to its share of the machine's cores
    (``OMP_NUM_THREADS``, unless already set). Returns ``{rank, size, local_rank, host, pid,
    device, threads}``.
    """
    import os
    import socket
    import sys

    from mpi4py import MPI

    world = MPI.COMM_WORLD
    my_rank, my_size = world.Get_rank(), world.Get_size()
    # Every engine runs this setup at once, so a collective is safe here: the engines that
    # share this machine's memory give the local rank and how many engines share its cores.
    node = world.Split_type(MPI.COMM_TYPE_SHARED)
    local, on_this_host = node.Get_rank(), node.Get_size()
    node.Free()
    for var in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_LOCAL_RANK",
                "MV2_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"):
        value = os.environ.get(var, "")
        if value.isdigit():  # the launcher's own numbering wins where it gives one
            local = int(value)
            break

    # CPU threads: each engine gets its share of the cores instead of all of them (torch's
    # default), so n engines on one machine do not fight over cores. A launcher that already
    # bound this engine to some cores (Slurm, mpiexec --bind-to) gave it its share; and
    # OMP_NUM_THREADS set by the user or the batch system is kept.
    total = os.cpu_count() or 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = total
    threads = cores if cores < total else max(1, cores // on_this_host)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    elif "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read when torch is first imported

    device = "cpu"
    driver = os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/kfd")
    if gpus is True or (gpus == "auto" and driver):
        import torch

        if torch.cuda.is_available():
            try:
                from declearn.comm.placement import default_device

                chosen = torch.device(default_device(local))
            except ImportError:
                chosen = torch.device("cuda", local % torch.cuda.device_count())
            if chosen.type == "cuda":
                torch.cuda.set_device(chosen)
            device = str(chosen)
        elif gpus is True:
            raise RuntimeError(
                f"gpus=True but torch sees no GPU on host {socket.gethostname()} "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Install a CUDA "
                "build of torch, or start the cluster with gpus=False."
            )

    if "torch" in sys.modules:  # already imported (GPU set-up above, or an earlier cell)
        sys.modules["torch"].set_num_threads(threads)

    globals().update(rank=my_rank, size=my_size, local_rank=local, device=device)
    return {
        "rank": my_rank, "size": my_size, "local_rank": local,
        "host": socket.gethostname(), "pid": os.getpid(), "device": device, "threads": threads,
    }


@interactive
def resync_engine(timeout=None):
    """Call ``declearn.comm.mpi.resync_all(timeout=...)`` here; return how many communicators
    it resynced, or None if this declearn has no such function."""
    import importlib

    try:
        module = importlib.import_module("declearn.comm.mpi")
    except ImportError:
        return None
    resync_all = getattr(module, "resync_all", None)
    if resync_all is None:
        return None
    return resync_all(timeout=timeout)


@interactive
def engine_identity():
    """``(MPI rank, pid)`` of this engine, from mpi4py, without touching the namespace."""
    import os

    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank(), os.getpid()
