"""Engines as one Slurm job: what :func:`declearn.cluster.start` does with ``slurm=``.

ipyparallel's Slurm launcher submits a batch script (``sbatch``) whose one line starts the
engines with ``srun``; ``srun --mpi=pmi2`` makes its tasks one MPI job (the mpich wheel speaks
PMI-2; ``{"mpi": "pmix"}`` where the site's Slurm and MPI use PMIx), so the engines are MPI
ranks 0..n-1 as on a laptop. The controller runs where ``start`` is called (a login node, or
the node of an interactive allocation); engines on other nodes need ``open_network=True`` and
an ``ip`` those nodes reach.

``slurm=True`` uses the scheduler's defaults; a dict adds ``#SBATCH --key=value`` lines, e.g.
``{"time": "01:00:00", "partition": "gpu", "account": "course", "gres": "gpu:1"}`` (a value of
True writes ``--key`` alone). The job's own output goes to ``<profile>/log/``.

A job still waiting in the queue when ``start``'s timeout passes is cancelled (``scancel``),
and the error says what Slurm said it waits for (``squeue``'s state and reason).
"""

from __future__ import annotations

import os
import subprocess

from declearn.cluster.checks import ClusterRequestError
from declearn.errors import ClusterError

__all__ = ["SRUN_MPI", "batch_template", "check_slurm", "job_state", "slurm_config",
           "timeout_error"]

#: srun's MPI plugin unless ``slurm={"mpi": ...}`` says otherwise.
SRUN_MPI = "pmi2"
_RESERVED = {"ntasks", "job-name", "export", "output"}


def check_slurm(slurm) -> dict:
    """The sbatch options of ``slurm`` (True or a dict), checked; raise ClusterRequestError
    naming what is wrong or missing (the ``sbatch`` command)."""
    import shutil

    if slurm is True:
        options = {}
    elif isinstance(slurm, dict):
        options = {str(k).lstrip("-").replace("_", "-"): v for k, v in slurm.items()}
    else:
        raise ClusterRequestError(
            f"slurm must be True or a dict of sbatch options (e.g. {{'time': '01:00:00', "
            f"'partition': 'debug'}}), got {slurm!r}.")
    clash = sorted(_RESERVED & set(options))
    if clash:
        raise ClusterRequestError(
            f"slurm options {clash} are set by declearn (one task per engine, the job's name, "
            "environment and output): leave them out.")
    for tool in ("sbatch", "squeue", "scancel"):
        if shutil.which(tool) is None:
            raise ClusterRequestError(
                f"slurm=... needs Slurm's `{tool}` on the PATH of this machine: run from a "
                "Slurm login node (or load the site's Slurm module).")
    return options


def batch_template(options: dict) -> str:
    """The batch script ipyparallel fills in (``{n}``, ``{cluster_id}``, ``{output_file}``,
    ``{program_and_args}`` are its fields)."""
    mpi = str(options.get("mpi", SRUN_MPI))
    lines = ["#!/bin/sh", "#SBATCH --ntasks={n}", "#SBATCH --job-name=ipengine-{cluster_id}",
             "#SBATCH --export=ALL", "#SBATCH --output={output_file}"]
    for key, value in options.items():
        if key == "mpi":
            continue
        text = str(value).replace("{", "{{").replace("}", "}}")
        lines.append(f"#SBATCH --{key}" if value is True else f"#SBATCH --{key}={text}")
    lines.append(f"srun --mpi={mpi} {{program_and_args}}")
    return "\n".join(lines) + "\n"


def slurm_config(cfg, options: dict, engine_cmd: list[str], env: dict,
                 profile_dir: str) -> None:
    """Configure ipyparallel's Slurm engine launcher in ``cfg``: the batch script (written in
    the profile's log folder, not in the current directory), the engines' command (``--mpi``:
    engine ids are the MPI ranks) and their extra environment."""
    cfg.SlurmEngineSetLauncher.batch_template = batch_template(options)
    cfg.SlurmEngineSetLauncher.batch_file_name = os.path.join(
        os.path.abspath(profile_dir), "log", "slurm_engines.sbatch")
    cfg.SlurmEngineSetLauncher.engine_cmd = list(engine_cmd)
    cfg.SlurmEngineSetLauncher.engine_args = ["--mpi"]
    cfg.SlurmEngineSetLauncher.environment = dict(env)


def job_state(job_id: str) -> tuple[str, str]:
    """``(state, reason)`` of a Slurm job as squeue shows it (``("GONE", "")`` once it has
    left the queue)."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T|%r"],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "UNKNOWN", str(exc)
    line = out.stdout.strip().splitlines()[:1]
    if not line:
        return "GONE", ""
    state, _, reason = line[0].partition("|")
    return state, reason


def timeout_error(ipp_cluster, n: int, timeout: float, cause: BaseException) -> ClusterError:
    """The error of a Slurm start that timed out: what the engines' job is waiting for (it is
    cancelled by the caller's clean-up)."""
    jobs = [getattr(es, "job_id", "") for es in ipp_cluster.engines.values()]
    jobs = [j for j in jobs if j]
    if not jobs:
        return ClusterError(f"{cause}")
    job = jobs[0]
    state, reason = job_state(job)
    if state == "PENDING":
        why = (f"Slurm job {job} of the {n} engines was still PENDING after {timeout:g} s "
               f"(reason: {reason or 'none given'}): the queue or the partition has no room "
               f"for {n} tasks now. It has been cancelled (scancel {job}). Ask for fewer "
               "engines, another partition or time limit (slurm={...}), or a longer timeout.")
    else:
        why = (f"Slurm job {job} of the {n} engines is {state} but its engines did not all "
               f"register within {timeout:g} s; it has been cancelled (scancel {job}). Its "
               f"output is in {os.path.join(ipp_cluster.profile_dir, 'log')}.\n{cause}")
    return ClusterError(why)
