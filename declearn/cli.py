"""The ``declearn`` command.

::

    declearn cluster start -n 4 [--profile declearn]   # a cluster that outlives this command
                 [--open-network --ip '*' --mpi-args '-f hosts' --no-resource-check]
    declearn cluster status [--profile declearn]       # what runs: engines, ranks
    declearn cluster stop [--profile declearn] [--all]
    declearn doctor [--quick]                          # is this machine ready for the chapters?
    declearn lab [--refresh 03] [--work work] [-- JUPYTER ARGS]   # what `make lab` runs
    declearn present 02 [--scale 1.5] [--port 8866] [--no-browser] [--original] [-- VOILA ARGS]

A notebook uses a cluster started here with ``cluster = declearn.cluster.attach()``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

__all__ = ["main", "build_parser"]


def _gpus(text: str):
    value = {"auto": "auto", "yes": True, "true": True, "no": False, "false": False}.get(
        text.lower())
    if value is None:
        raise argparse.ArgumentTypeError("--gpus takes auto, yes or no")
    return value


def _add_profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=None,
                   help="IPython profile name (default: declearn), in $IPYTHONDIR")
    p.add_argument("--profile-dir", default=None, help="explicit profile directory")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("declearn-tutorials")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="declearn", description="Decentralized optimization and learning, in JupyterLab.")
    parser.add_argument("--version", action="version", version=f"declearn {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    cluster = sub.add_parser("cluster", help="start, inspect or stop clusters of MPI engines")
    csub = cluster.add_subparsers(dest="action", required=True)

    p = csub.add_parser("start", help="start a cluster that keeps running after this command")
    p.add_argument("-n", type=int, default=4, help="number of engines = MPI ranks (default 4)")
    _add_profile_args(p)
    p.add_argument("--cluster-id", default="",
                   help="name of the cluster in the profile (default: '', which plain "
                        "ipyparallel.Client(profile=...) also finds)")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for engines")
    p.add_argument("--oversubscribe", action="store_true",
                   help="allow more engines than max(4, cores)")
    p.add_argument("--gpus", type=_gpus, default="auto", help="auto (default), yes or no")
    p.add_argument("--ip", default="127.0.0.1",
                   help="controller address (default 127.0.0.1); '*' with --open-network for "
                        "engines on other hosts")
    p.add_argument("--open-network", action="store_true",
                   help="launch with the MPI's own mpiexec, which listens on every network "
                        "interface (engines on other hosts, host files, -ppn); by default "
                        "every process listens on loopback only. Only on a trusted network")
    p.add_argument("--mpi-args", default="", help="extra mpiexec arguments, one quoted string")
    p.add_argument("--hosts", default=None,
                   help="engines on several hosts, ranks host by host: 'addr:slots,addr:slots' "
                        "(Hydra over ssh; with --open-network and an --ip they reach)")
    p.add_argument("--interface", default=None,
                   help="network interface that carries the job's traffic (e.g. eth0)")
    p.add_argument("--slurm", nargs="?", const="", default=None, metavar="OPTIONS",
                   help="start the engines as one Slurm job (sbatch + srun); OPTIONS: sbatch "
                        "options as 'time=01:00:00,partition=debug'")
    p.add_argument("--no-resource-check", action="store_true",
                   help="skip the local core/memory rules (engines on other hosts)")

    p = csub.add_parser("status", help="list the clusters of a profile, their engines, ranks")
    _add_profile_args(p)

    p = csub.add_parser("stop", help="stop the clusters of a profile (one a live notebook "
                                     "started only with --all or --cluster-id)")
    _add_profile_args(p)
    p.add_argument("--cluster-id", default=None, help="stop only this cluster")
    p.add_argument("--all", action="store_true",
                   help="also stop clusters that a live notebook/Python process started")

    p = sub.add_parser("lab", help="open JupyterLab on your working copies of the chapters")
    p.add_argument("--tutorials", default="tutorials",
                   help="the course's chapter notebooks (default: tutorials)")
    p.add_argument("--work", default="work",
                   help="your working copies, made the first time (default: work)")
    p.add_argument("--refresh", metavar="CHAPTER", default=None,
                   help="replace your copy of a chapter (e.g. 03) by a fresh one, keeping "
                        "yours as a backup, then stop")
    p.add_argument("jupyter_args", nargs=argparse.REMAINDER,
                   help="after --: arguments for jupyter lab (e.g. -- --no-browser --port 8890)")

    p = sub.add_parser("present", help="show a chapter's text, figures and widgets without its "
                                      "code, for a projector (Voila)",
                       epilog="Arguments after -- go to voila (e.g. -- --theme=dark).")
    p.add_argument("chapter", nargs="?", default=None, help="the chapter's number, e.g. 02")
    p.add_argument("--scale", default=None, metavar="FACTOR",
                   help="size of text, figures and widgets relative to JupyterLab's "
                        "(default 1.5; 2 for a large room)")
    p.add_argument("--port", type=int, default=None, help="the server's port (default 8866, "
                                                         "the next free one if taken)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--tutorials", default="tutorials",
                   help="the course's chapter notebooks (default: tutorials)")
    p.add_argument("--work", default="work",
                   help="your working copies: a chapter found there is shown (default: work)")
    p.add_argument("--original", action="store_true",
                   help="show the chapter of --tutorials even when --work has a copy")

    p = sub.add_parser("doctor", help="check Python, MPI, engines, GPUs and JupyterLab widgets")
    p.add_argument("--quick", action="store_true", help="skip starting a 2-engine cluster")
    p.add_argument("--timeout", type=float, default=60,
                   help="seconds allowed to each check that launches processes")
    return parser


def _slurm_options(text: str | None):
    """``--slurm``'s value: None (not given), True (no options) or a dict of sbatch options."""
    if text is None:
        return None
    if not text.strip():
        return True
    options = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        options[key.strip()] = value.strip() if sep else True
    return options


def _cluster_start(args) -> int:
    from declearn.cluster import start
    from declearn.errors import ClusterError

    try:
        cluster = start(
            args.n, profile=args.profile, profile_dir=args.profile_dir,
            cluster_id=args.cluster_id, timeout=args.timeout,
            oversubscribe=True if args.oversubscribe else None, gpus=args.gpus,
            mpi_args=shlex.split(args.mpi_args), activate=False, ip=args.ip,
            check_resources=not args.no_resource_check, persistent=True,
            open_network=args.open_network,
            hosts=args.hosts.split(",") if args.hosts else None,
            interface=args.interface, slurm=_slurm_options(args.slurm),
        )
    except ClusterError as exc:
        print(f"declearn cluster start: {exc}", file=sys.stderr)
        return 1
    print(repr(cluster).replace("attached", "running in the background"))
    profile = f"profile_dir={args.profile_dir!r}" if args.profile_dir else (
        f"profile={args.profile!r}" if args.profile else "")
    cid = f"cluster_id={args.cluster_id!r}" if args.cluster_id else ""
    call = ", ".join(a for a in (profile, cid) if a)
    print(f"In a notebook: cluster = declearn.cluster.attach({call})")
    print("Stop it with: declearn cluster stop"
          + (f" --profile {args.profile}" if args.profile else "")
          + (f" --profile-dir {args.profile_dir}" if args.profile_dir else ""))
    cluster.stop(shutdown=False)
    return 0


def _cluster_status(args) -> int:
    from declearn.cluster import list_clusters

    clusters = list_clusters(args.profile, profile_dir=args.profile_dir)
    where = args.profile_dir or f"profile {args.profile or 'declearn'}"
    if not clusters:
        print(f"No cluster in {where}. Start one with: declearn cluster start -n 4")
        return 1
    running = 0
    for c in clusters:
        name = repr(c["cluster_id"])
        if not c["running"]:
            print(f"cluster {name}: NOT running (stale files; `declearn cluster stop` cleans up)")
            continue
        running += 1
        expected = f" of {c['n']}" if c["n"] else ""
        if c["ranks"] is None:
            ranks = "ranks unknown (engines busy)" if c["engines"] else "no engines"
        else:
            ranks = "engine id -> rank: " + ", ".join(
                f"{eid}->{r}" for eid, r in sorted(c["ranks"].items(), key=lambda kv: kv[1]))
        print(f"cluster {name}: running, {c['engines']}{expected} engines, {ranks}"
              + (f", started by {c['started_by']}" if c["started_by"] else ""))
    print(f"({where}: {c['profile_dir']})")
    return 0 if running else 1


def _cluster_stop(args) -> int:
    import psutil

    from declearn.cluster import list_clusters, stop_clusters
    from declearn.cluster.launch import forget_stale, resolve_profile_dir
    from declearn.cluster.record import ClusterRecord

    pdir = resolve_profile_dir(args.profile, args.profile_dir)
    clusters = list_clusters(profile_dir=pdir, query_timeout=1.0)
    if args.cluster_id is not None:
        clusters = [c for c in clusters if c["cluster_id"] == args.cluster_id]
        if not clusters:
            print(f"No cluster {args.cluster_id!r} in {pdir}.")
            return 1
    stopped, skipped = [], []
    for c in clusters:
        cid = c["cluster_id"]
        record = ClusterRecord.load(pdir, cid)
        owner_alive = (record is not None and not record.persistent
                       and record.pid != os.getpid() and psutil.pid_exists(record.pid))
        if c["running"] and owner_alive and not args.all and args.cluster_id is None:
            skipped.append(cid)
            print(f"Skipping cluster {cid!r}: process {record.pid} (a notebook?) started it and "
                  "still runs; pass --all or --cluster-id to stop it anyway.")
            continue
        stopped += stop_clusters(profile_dir=pdir, cluster_id=cid)
    forget_stale(pdir)
    if stopped:
        print("Stopped cluster(s) " + ", ".join(repr(c) for c in stopped) + f" in {pdir}.")
    elif not skipped:
        print(f"No cluster running in {pdir}.")
    return 0


def _lab(args) -> int:
    import subprocess

    from declearn.workspace import lab_command, lab_environment, refresh_chapter, seed_workspace

    try:
        if args.refresh is not None:
            fresh, backup = refresh_chapter(args.tutorials, args.work, args.refresh)
            print(f"fresh copy: {fresh}" + (f" (yours is kept as {backup.name})" if backup else ""))
            return 0
        copied = seed_workspace(args.tutorials, args.work)
    except (FileNotFoundError, ValueError) as exc:
        print(f"declearn lab: {exc}", file=sys.stderr)
        return 2
    if copied:
        print(f"Your working copies are in {args.work}/ ({len(copied)} copied from "
              f"{args.tutorials}/; edit them freely, `declearn lab --refresh 03` gives a fresh "
              "chapter 03).")
    extra = [a for a in args.jupyter_args if a != "--"]
    cmd = lab_command(extra)
    if "--allow-root" in cmd and "--allow-root" not in extra:
        print("Running as root (a container or VM?): JupyterLab is started with --allow-root.")
    return subprocess.call(cmd, cwd=args.work, env=lab_environment())


def _present(args) -> int:
    from pathlib import Path

    from declearn.present import DEFAULT_SCALE, find_chapter, parse_scale, serve

    try:
        scale = DEFAULT_SCALE if args.scale is None else parse_scale(args.scale)
        notebook = find_chapter(args.chapter, args.tutorials,
                                None if args.original else args.work)
    except (FileNotFoundError, ValueError) as exc:
        print(f"declearn present: {exc}", file=sys.stderr)
        return 2
    where = ("the original" if notebook.parent.resolve() == Path(args.tutorials).resolve()
             else "your working copy; --original shows the original")
    print(f"Presenting {notebook} ({where}) at scale {scale:g}; Ctrl+C stops the server.\n"
          "Its connect() cell attaches to the running cluster of the declearn profile or starts "
          "its own for the page (`declearn cluster start -n 8` first keeps one for every "
          "chapter).")
    try:
        return serve(notebook, scale=scale, port=args.port, open_browser=not args.no_browser,
                     extra=args.voila_args)
    except FileNotFoundError as exc:  # no voila
        print(f"declearn present: {exc}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    voila_args = []
    if argv[:1] == ["present"] and "--" in argv:  # not a REMAINDER: it would eat the options
        cut = argv.index("--")
        argv, voila_args = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    args.voila_args = voila_args
    if args.command == "lab":
        return _lab(args)
    if args.command == "present":
        return _present(args)
    if args.command == "doctor":
        from declearn.doctor import run_doctor

        return run_doctor(quick=args.quick, timeout=args.timeout)
    handler = {"start": _cluster_start, "status": _cluster_status, "stop": _cluster_stop}
    return handler[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
