"""Shared test set-up: keep tests away from the user's ~/.ipython and off any display."""

import os
import tempfile

# Before anything imports IPython or ipyparallel.
os.environ.setdefault("IPYTHONDIR", tempfile.mkdtemp(prefix="declearn-test-ipython-"))
os.environ.setdefault("IPP_NONINTERACTIVE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_runtest_setup(item):
    """``gpu``-marked tests skip without a CUDA GPU, saying how to run them, except under
    ``make gpu-check`` (``DECLEARN_REQUIRE_GPU=1``), where a missing GPU is a failure."""
    if item.get_closest_marker("gpu") is None:
        return
    import pytest
    import torch

    if torch.cuda.is_available():
        return
    why = (f"needs a CUDA GPU; torch {torch.__version__} (CUDA {torch.version.cuda}) sees "
           "none here")
    if os.environ.get("DECLEARN_REQUIRE_GPU") == "1":
        pytest.fail(f"{why}, and make gpu-check asked for one (DECLEARN_REQUIRE_GPU=1).")
    pytest.skip(f"{why} (make gpu-check runs it on a machine with one).")
