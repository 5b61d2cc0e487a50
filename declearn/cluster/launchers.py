"""ipyparallel's launchers, made quiet: what the controller and the engines print stays in
the profile's log files, and a requested stop prints nothing.

ipyparallel starts the controller and ``mpiexec`` with their output sent to
``<profile_dir>/log/<name>-<cluster id>-...-<pid>.log``. Three of its habits fill a terminal or
a notebook with that output when nothing went wrong:

* a launcher whose logger is at DEBUG copies the whole file, as it grows, to its own stderr. A
  Jupyter server's logger always is (its handlers filter), so a cluster started by JupyterLab's
  IPython Parallel sidebar streams every engine's log into the ``make lab`` terminal;
* when the processes end, even on a requested stop, the last 100 lines of each file are logged
  as a warning ("Output for ...", with the engines' "received signal 15"), and not only by the
  process that started them: a Jupyter server's sidebar loads every cluster file of every
  profile and watches those processes too;
* the file is then removed by whichever process looks first, and the other one logs an error
  ("Failed to remove ...").

:class:`QuietMPIEngineSetLauncher` and :class:`QuietControllerLauncher` never stream, say
nothing about a stop they were asked for, and take a file already removed as removed; a process
that ends unasked is still reported as ipyparallel does. Their cluster files name them ``mpi``
and ``local``, ipyparallel's own launchers, so a process without declearn (another Jupyter
server) still loads the file. :func:`detach_output` renames a launcher's output file before its
processes are signalled, so that the other processes watching them find nothing to repeat.
"""

from __future__ import annotations

import os

from ipyparallel.cluster.launcher import LocalControllerLauncher, MPIEngineSetLauncher

__all__ = ["QuietMPIEngineSetLauncher", "QuietControllerLauncher", "detach_output",
           "STOPPING_SUFFIX"]

#: A launcher's output file is renamed ``<name>-stopping.log`` once its stop has begun.
STOPPING_SUFFIX = "-stopping.log"


def _launchers_with_output(launcher) -> list:
    """The launcher, and the per-engine launchers of a set of single engines."""
    found = [launcher] if getattr(launcher, "output_file", "") else []
    return found + [sub for sub in getattr(launcher, "launchers", {}).values()
                    if getattr(sub, "output_file", "")]


def detach_output(launcher) -> list[str]:
    """Rename the output file of ``launcher`` (and of the engines of an engine set) to its
    ``-stopping.log`` name, and point the launcher at it, before its processes are signalled:
    whoever else watches those processes finds no output to log when they end, while this
    launcher still reads and removes it. Return the new paths. Idempotent."""
    moved = []
    for each in _launchers_with_output(launcher):
        path = each.output_file
        if path.endswith(STOPPING_SUFFIX):
            moved.append(path)
            continue
        target = (path[:-len(".log")] if path.endswith(".log") else path) + STOPPING_SUFFIX
        try:
            os.replace(path, target)
        except OSError:  # already gone (removed by another watcher): nothing to hide
            continue
        each.output_file = target
        each._output = None  # read again from the new name
        moved.append(target)
    return moved


def _remove_quietly(launcher) -> None:
    try:
        os.remove(launcher.output_file)
    except FileNotFoundError:  # removed first by another process watching the same cluster
        pass
    except OSError as exc:
        launcher.log.error(f"Failed to remove {launcher.output_file}: {exc}")


class _QuietOutput:
    """What the two quiet launchers change in ipyparallel's local process launchers."""

    _stop_requested = False

    def _start_streaming(self) -> None:
        """Never: the output stays in the log file (see the module docstring)."""

    async def stop(self):
        self._stop_requested = True
        detach_output(self)
        return await super().stop()

    def _log_output(self, stop_data=None) -> None:
        if self._stop_requested:  # the engines' "received signal 15" is no news
            self.get_output(remove=True)
            return
        super()._log_output(stop_data)

    def get_output(self, remove: bool = False) -> str:
        output = super().get_output(remove=False)
        if remove and self.output_file:
            _remove_quietly(self)
        return output


class QuietMPIEngineSetLauncher(_QuietOutput, MPIEngineSetLauncher):
    """``mpiexec -n n python -m ipyparallel.engine --mpi``, quiet (see the module docstring)."""

    entrypoint_name = "mpi"  # what the cluster file names: loadable without declearn


class QuietControllerLauncher(_QuietOutput, LocalControllerLauncher):
    """The controller as a local process, quiet (see the module docstring)."""

    entrypoint_name = "local"
