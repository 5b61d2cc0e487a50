"""Binder: the environment mybinder.org builds from binder/, rebuilt here the way repo2docker
builds it (tests/binder_build.py: a fresh virtual environment, ``pip install -r
binder/requirements.txt`` from the repository root, then ``binder/postBuild``), and chapter 00
executed in it with real engines.

Fast checks: binder/ names no package index, pins the PyTorch the Makefile installs, installs
this repository, and asks for the Python the suite runs. Slow ones, on one build per run:
mpiexec and MPI come from the built environment; a real JupyterLab server of that environment
serves the settings of binder/overrides.json in place of JupyterLab's shipped defaults;
``declearn doctor`` passes; chapter 00 runs top to bottom in that environment's kernel and
engines, within Binder's 2 GB (the peak memory of the run is printed).

The build keeps pip's cache (repo2docker passes --no-cache-dir), so a second run is faster.
Without a network to the package index the slow tests are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from binder_build import (
    NoPackageIndex,
    binder_python_version,
    build,
    kill_processes_of,
)
from binder_memory import kind_of, run_chapter, stop_leftovers

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
CHAPTER = "tutorials/00_getting_started.ipynb"
#: mybinder.org's user guidelines: "users are guaranteed at least 1GB of RAM, with a maximum
#: of 2GB ... if you go over 2GB your kernel will be restarted".
BINDER_MAX_BYTES = 2 * 10**9
SUITE_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _requirement_lines() -> list[str]:
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    return [ln.split(" #")[0].strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def test_binder_names_no_package_index():
    """House rule: no index or link option, no URL, in what repo2docker reads."""
    for line in _requirement_lines():
        assert not line.startswith(("-i", "--index-url", "--extra-index-url", "-f",
                                    "--find-links")), f"binder/requirements.txt: {line}"
    for name in ("requirements.txt", "postBuild"):
        assert "://" not in (BINDER / name).read_text(), f"binder/{name} names a URL"


def test_binder_pins_the_torch_of_the_makefile():
    makefile = re.search(r"^TORCH \?= *(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert makefile, "the Makefile has no `TORCH ?= ...` line"
    torch = [ln for ln in _requirement_lines() if re.match(r"torch\b", ln)]
    assert torch == [makefile.group(1)], (
        f"binder/requirements.txt pins {torch}, the Makefile installs {makefile.group(1)}: "
        "make them the same release")


def test_binder_installs_this_repository():
    """With a binder/ folder repo2docker installs only what binder/ says: the `.` line."""
    assert {".", "-e ."} & set(_requirement_lines()), \
        "binder/requirements.txt must list `.` (this repository, with pyproject's dependencies)"


def test_binder_runs_the_python_the_suite_tests():
    version = binder_python_version(BINDER)
    assert version == SUITE_PYTHON, (
        f"Binder would build with Python {version} (binder/runtime.txt, else repo2docker's "
        f"default), the suite runs {SUITE_PYTHON}: write `python-{SUITE_PYTHON}` into "
        "binder/runtime.txt")


def test_binder_python_version_reads_runtime_txt(tmp_path):
    assert binder_python_version(tmp_path) == "3.10"
    (tmp_path / "runtime.txt").write_text("python-3.12\n")
    assert binder_python_version(tmp_path) == "3.12"
    (tmp_path / "runtime.txt").write_text("3.12\n")
    with pytest.raises(ValueError, match=r"python-X\.Y"):
        binder_python_version(tmp_path)


@pytest.fixture(scope="module")
def binder(tmp_path_factory):
    """One build per run; every process of it stopped and the folder removed afterwards."""
    workdir = tmp_path_factory.mktemp("binder").resolve()
    base_python = Path(sys.base_prefix) / "bin" / f"python{SUITE_PYTHON}"
    env = None
    try:
        start = time.monotonic()
        try:
            built = build(ROOT, workdir, base_python)
        except NoPackageIndex as exc:
            pytest.skip(str(exc))
        env = built.env
        steps = ", ".join(f"{name} {s:.0f} s" for name, s in built.seconds.items())
        print(f"\nBinder environment built in {time.monotonic() - start:.0f} s ({steps})")
        yield built
    finally:
        if env is not None:
            stop_leftovers(str(workdir / "venv" / "bin" / "python"), Path(env["IPYTHONDIR"]),
                           env)
        kill_processes_of(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def _run(binder, *cmd, timeout=120, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], env=binder.env, cwd=cwd or binder.repo,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.timeout(3600)
def test_binder_environment_has_its_own_mpi_and_declearn(binder):
    version = _run(binder, binder.python, "-c", "import sys; print(sys.version_info[:2])")
    assert version.stdout.strip() == str(sys.version_info[:2])
    mpiexec = shutil.which("mpiexec", path=binder.env["PATH"])
    assert mpiexec == str(binder.bin("mpiexec")), f"mpiexec found at {mpiexec}"
    assert "HYDRA" in _run(binder, "mpiexec", "--version").stdout
    library = _run(binder, binder.python, "-c",
                   "from mpi4py import MPI; print(MPI.Get_library_version())")
    assert library.returncode == 0 and "MPICH" in library.stdout, library.stderr
    # From a chapter's folder, as its kernel does: the installed copy, not the sources.
    where = _run(binder, binder.python, "-c", "import declearn, widgets; "
                 "print(declearn.__file__); print(widgets.__file__)", cwd=binder.repo / "tutorials")
    assert where.returncode == 0, where.stderr
    for path in where.stdout.split():
        assert Path(path).is_relative_to(binder.venv), f"imported from {path}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.fixture
def lab_server(binder):
    """The environment's own JupyterLab server, as Binder starts it; stopped afterwards."""
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [binder.bin("jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={binder.repo}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = binder.workdir / "lab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(c) for c in cmd], env=binder.env, cwd=binder.repo,
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"jupyter lab exited:\n{log.read_text()[-3000:]}"
            try:
                _get_json(f"{base}/api/status", token)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert time.monotonic() < deadline, \
                    f"jupyter lab not answering after 120 s:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_binder_jupyterlab_serves_the_overrides(binder, lab_server):
    """Every setting of binder/overrides.json is the default the server sends, in place of
    the default of the schema JupyterLab ships."""
    base, token = lab_server
    paths = _run(binder, binder.bin("jupyter"), "lab", "path").stdout
    app_dir = Path(re.search(r"Application directory:\s*(\S+)", paths).group(1))
    overrides = json.loads((BINDER / "overrides.json").read_text())
    for plugin, values in overrides.items():
        package, name = plugin.split(":")
        shipped = json.loads((app_dir / "schemas" / package / f"{name}.json").read_text())
        served = _get_json(f"{base}/lab/api/settings/{plugin}", token)["schema"]
        for key, value in values.items():
            assert shipped["properties"][key].get("default") != value, \
                f"{plugin} {key}: JupyterLab's own default is already {value!r}"
            assert served["properties"][key].get("default") == value, \
                f"{plugin} {key}: the server sends {served['properties'][key].get('default')!r}"


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.cluster
@pytest.mark.timeout(3600)
def test_binder_doctor_passes(binder):
    out = _run(binder, binder.bin("declearn"), "doctor", timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f" at {binder.python}" in out.stdout, "the doctor did not run in the Binder environment"


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.tutorial
@pytest.mark.timeout(3600)
def test_binder_runs_chapter_00(binder):
    """Chapter 00 top to bottom in the environment's kernel, with its engines, in 2 GB."""
    run = run_chapter(str(binder.python), binder.repo / CHAPTER, binder.workdir / "chapter",
                      binder.env, timeout=1500)
    print(f"\n{CHAPTER} in the Binder environment: {run.seconds:.0f} s, {run.peak.summary()}")
    assert run.returncode == 0, run.output[-6000:]
    programs = {}
    for cmdline in run.peak.seen.values():
        programs.setdefault(kind_of(cmdline), set()).add(cmdline[0])
    for kind in ("kernel", "engine", "controller", "mpiexec"):
        assert kind in programs, f"no {kind} seen during the run: {sorted(programs)}"
        for program in programs[kind]:
            assert Path(program).is_relative_to(binder.venv / "bin"), \
                f"a {kind} ran {program}, not the Binder environment's"
    assert run.peak.pss < BINDER_MAX_BYTES, (
        f"chapter 00 took {run.peak.pss / 1e9:.2f} GB at its peak: more than Binder's 2 GB")
