"""Shared test set-up: keep tests away from the user's ~/.ipython and off any display."""

import os
import tempfile

# Before anything imports IPython or ipyparallel.
os.environ.setdefault("IPYTHONDIR", tempfile.mkdtemp(prefix="declearn-test-ipython-"))
os.environ.setdefault("IPP_NONINTERACTIVE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
