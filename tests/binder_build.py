"""Build, in a temporary folder, the environment that mybinder.org builds from binder/.

What repo2docker does with a repository that has a binder/ folder (its Python build pack,
repo2docker/buildpacks/python/__init__.py and base.py of jupyterhub/repo2docker):

1. only the files in binder/ count; pyproject.toml is neither installed nor read;
2. the Python is the one runtime.txt names (``python-X.Y``), else its default, 3.10;
3. from the repository root (``WORKDIR ${REPO_DIR}``), with the environment's ``bin`` first on
   the PATH: ``pip install --no-cache-dir -r binder/requirements.txt`` (a ``.`` line there is
   the repository itself: pip reads such paths relative to the working directory);
4. then ``chmod +x binder/postBuild`` and ``./binder/postBuild``, from the repository root too.

``build`` does the same with a fresh virtual environment (repo2docker's is a conda environment
that already holds JupyterLab, notebook and ipywidgets), on a copy of the working tree (tracked
files and untracked ones git does not ignore: what a clone of the next commit holds), so that
pip's in-tree build (build/, *.egg-info) lands in the copy. It keeps pip's cache, so a second
build is faster. A pip failure caused by an unreachable package index raises ``NoPackageIndex``.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

#: repo2docker's Python when binder/runtime.txt names none (CondaBuildPack.major_pythons["3"]).
REPO2DOCKER_DEFAULT_PYTHON = "3.10"

#: What pip prints when it cannot reach a package index (urllib3 and pip's own messages).
NETWORK_ERRORS = ("NewConnectionError", "Failed to establish a new connection",
                  "Temporary failure in name resolution", "Name or service not known",
                  "Network is unreachable", "ConnectTimeoutError", "ProxyError",
                  "Could not fetch URL", "No route to host")

#: Variables of the test process that must not leak into the built environment's processes.
DROPPED = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MPLBACKEND", "IPP_NONINTERACTIVE",
           "IPYTHONDIR", "JUPYTERLAB_DIR", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH")


class NoPackageIndex(RuntimeError):
    """pip could not reach the package index."""


def binder_python_version(binder_dir: Path) -> str:
    """The ``X.Y`` Python version repo2docker builds binder_dir with."""
    runtime = Path(binder_dir) / "runtime.txt"
    if not runtime.is_file():
        return REPO2DOCKER_DEFAULT_PYTHON
    text = runtime.read_text().strip()
    match = re.fullmatch(r"python-(\d+\.\d+)(\.\d+)?", text)
    if not match:
        raise ValueError(f"{runtime} says {text!r}; repo2docker expects python-X.Y, "
                         "e.g. python-3.11")
    return match.group(1)


def copy_working_tree(root: Path, dest: Path) -> None:
    """Copy root's tracked files and its untracked files that git does not ignore."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"],
                                 cwd=root, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"{root} must be a git checkout (git ls-files failed: {exc})") from exc
    for name in filter(None, listing.decode().split("\0")):
        source = root / name
        if source.is_file():  # a deleted but still tracked file is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@dataclass
class BinderEnv:
    """The built environment: the repository copy, the venv and its interpreter, the
    environment variables of a session in it, and the seconds each build step took."""

    workdir: Path
    repo: Path
    venv: Path
    python: Path
    env: dict
    seconds: dict = field(default_factory=dict)

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name


def session_env(venv: Path, workdir: Path) -> dict:
    """This process's environment with venv/bin first on the PATH (as in repo2docker's image)
    and Jupyter's and IPython's folders in workdir (no settings or profiles of this machine)."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    venv_bin = str(venv / "bin")
    others = [p for p in env.get("PATH", "").split(os.pathsep)
              if p and not (Path(p).parent / "pyvenv.cfg").exists()]  # no other venv's bin
    env["PATH"] = os.pathsep.join([venv_bin, *others])
    home = workdir / "home"
    for var, sub in (("IPYTHONDIR", "ipython"), ("JUPYTER_CONFIG_DIR", "jupyter-config"),
                     ("JUPYTER_DATA_DIR", "jupyter-data"), ("JUPYTER_RUNTIME_DIR", "jupyter-run"),
                     ("JUPYTERLAB_SETTINGS_DIR", "lab-user-settings"),
                     ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    return env


def _step(name: str, cmd: list, *, cwd: Path, env: dict, timeout: float, seconds: dict) -> str:
    start = time.monotonic()
    try:
        out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{name}: no result after {timeout:g} s ({' '.join(map(str, cmd))})"
                           ) from exc
    seconds[name] = time.monotonic() - start
    output = out.stdout + out.stderr
    if out.returncode != 0:
        reason = next((line.strip() for line in output.splitlines()
                       if any(word in line for word in NETWORK_ERRORS)), None)
        if reason and "pip" in name:
            raise NoPackageIndex(f"{name}: no network to the package index ({reason})")
        raise RuntimeError(f"{name} failed (exit {out.returncode}):\n{output[-4000:]}")
    return output


def build(root: Path, workdir: Path, base_python: Path) -> BinderEnv:
    """Build the Binder environment of ``root`` in ``workdir`` with ``base_python``."""
    repo, venv = workdir / "repo", workdir / "venv"
    repo.mkdir(parents=True)
    copy_working_tree(root, repo)
    env = session_env(venv, workdir)
    seconds: dict = {}
    python = venv / "bin" / "python"
    _step("venv", [base_python, "-m", "venv", venv], cwd=repo, env=env, timeout=300,
          seconds=seconds)
    # repo2docker's environment comes with a recent pip; the venv's bundled one may be older.
    _step("pip upgrade", [python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
          cwd=repo, env=env, timeout=900, seconds=seconds)
    _step("pip install -r binder/requirements.txt",
          [python, "-m", "pip", "install", "-r", "binder/requirements.txt"],
          cwd=repo, env=env, timeout=3600, seconds=seconds)
    post_build = repo / "binder" / "postBuild"
    if post_build.exists():
        post_build.chmod(post_build.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        _step("binder/postBuild", ["./binder/postBuild"], cwd=repo, env=env, timeout=300,
              seconds=seconds)
    return BinderEnv(workdir, repo, venv, python, env, seconds)


def kill_processes_of(workdir: Path) -> list[int]:
    """SIGKILL, by pid, every process started from an executable under workdir (the venv's
    python and scripts, mpiexec, hydra proxies); return their pids."""
    prefix = str(Path(workdir).resolve()) + os.sep
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        if any(str(arg).startswith(prefix) for arg in (proc.info["cmdline"] or [])[:2]):
            found.append(proc)
    for proc in found:
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    psutil.wait_procs(found, timeout=10)
    return [p.pid for p in found]
