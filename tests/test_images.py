"""declearn.problems.images: MNIST, Fashion-MNIST and CIFAR-10 read from files written here in
the published formats (IDX, gzipped or not; CIFAR-10's pickled batches in a tar.gz), and
downloads from a real local HTTP server (checksums, mirrors, offline errors)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import re
import struct
import tarfile
import threading

import numpy as np
import pytest
import torch

from declearn.problems import partition
from declearn.problems.images import (
    SOURCES,
    ImageSource,
    data_folder,
    images_available,
    load_cifar10,
    load_fashion_mnist,
    load_images,
    load_mnist,
)

from mpi_helpers import needs_mpi, run_mpi

RNG = np.random.default_rng(0)


def idx_bytes(a: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, written from the format's description."""
    return struct.pack(">I", 0x0800 + a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + \
        a.astype(np.uint8).tobytes()


def write_idx_set(folder, n_train=12, n_test=5, *, gz=True, side=28):
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for part, count in (("train", n_train), ("t10k", n_test)):
        X = RNG.integers(0, 256, (count, side, side), dtype=np.uint8)
        y = RNG.integers(0, 10, count, dtype=np.uint8)
        data[part] = (X, y)
        for stem, a in ((f"{part}-images-idx3-ubyte", X), (f"{part}-labels-idx1-ubyte", y)):
            raw = idx_bytes(a)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / stem).write_bytes(raw)
    return data


def cifar_batch(count):
    X = RNG.integers(0, 256, (count, 3072), dtype=np.uint8)
    y = RNG.integers(0, 10, count).tolist()
    return X, y, pickle.dumps({b"batch_label": b"x", b"data": X, b"labels": y}, protocol=2)


def write_cifar(folder, *, archive=True, per_batch=4):
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batches[name] = cifar_batch(per_batch)
    if archive:
        with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name, (_, _, raw) in batches.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    else:
        (folder / "cifar-10-batches-py").mkdir()
        for name, (_, _, raw) in batches.items():
            (folder / "cifar-10-batches-py" / name).write_bytes(raw)
    return batches


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
def test_idx_files_give_the_pixels_scaled_and_the_labels(tmp_path, gz, loader):
    data = write_idx_set(tmp_path, gz=gz)
    ds = loader(tmp_path, download=False)
    X, y = data["train"]
    assert ds.X_train.shape == (12, 1, 28, 28) and ds.X_train.dtype == torch.float32
    np.testing.assert_allclose(ds.X_train[:, 0].numpy(), X / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train.numpy(), y)
    np.testing.assert_array_equal(ds.y_test.numpy(), data["t10k"][1])
    assert ds.classes == 10
    flat = loader(tmp_path, download=False, flatten=True, dtype=torch.float64)
    assert flat.X_test.shape == (5, 784) and flat.X_test.dtype == torch.float64
    np.testing.assert_allclose(flat.X_test.numpy(), data["t10k"][0].reshape(5, -1) / 255.0)


@pytest.mark.parametrize("archive", [True, False])
def test_cifar_batches_give_rgb_planes_in_order(tmp_path, archive):
    batches = write_cifar(tmp_path, archive=archive)
    ds = load_cifar10(tmp_path, download=False)
    assert ds.X_train.shape == (20, 3, 32, 32) and ds.X_test.shape == (4, 3, 32, 32)
    X1 = batches["data_batch_1"][0]
    # image 0 of batch 1: its first 1024 bytes are the red plane, row by row
    np.testing.assert_allclose(ds.X_train[0, 0].numpy(), X1[0, :1024].reshape(32, 32) / 255.0,
                               rtol=1e-6)
    np.testing.assert_allclose(ds.X_train[0, 2].numpy(), X1[0, 2048:].reshape(32, 32) / 255.0,
                               rtol=1e-6)
    labels = [v for i in range(1, 6) for v in batches[f"data_batch_{i}"][1]]
    np.testing.assert_array_equal(ds.y_train.numpy(), labels)
    np.testing.assert_array_equal(ds.y_test.numpy(), batches["test_batch"][1])


def test_splits_of_an_image_set_cover_the_training_set_once(tmp_path):
    write_idx_set(tmp_path, n_train=40)
    ds = load_mnist(tmp_path, download=False)
    parts = partition(ds.y_train.numpy(), 4, method="dirichlet", alpha=0.5, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(40))


def test_the_default_folder_follows_declearn_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DECLEARN_DATA", str(tmp_path))
    assert data_folder("mnist") == tmp_path / "mnist"
    assert not images_available("mnist")
    write_idx_set(tmp_path / "mnist")
    assert images_available("mnist") and not images_available("cifar10")
    assert load_mnist(download=False).X_train.shape[0] == 12
    monkeypatch.delenv("DECLEARN_DATA")
    assert data_folder("cifar10").parts[-3:] == (".cache", "declearn", "cifar10")


def test_absent_files_without_download_name_the_folder_and_the_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path / "nowhere", download=False)
    text = str(info.value)
    assert str(tmp_path / "nowhere") in text
    assert "train-images-idx3-ubyte.gz" in text and "t10k-labels-idx1-ubyte.gz" in text
    assert "folder=" in text and "DECLEARN_DATA" in text


# ---------------------------------------------------------------------- downloads
@pytest.fixture
def server(tmp_path):
    """A real HTTP server on loopback serving tmp_path/served."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _md5s(folder):
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_download_from_the_second_mirror_checks_md5_and_loads(tmp_path, server):
    root, url = server
    data = write_idx_set(root)
    dead = "http://127.0.0.1:1/"  # nothing listens there
    source = ImageSource("mini", _md5s(root), (dead, url), "idx", (1, 28, 28))
    target = tmp_path / "data"
    ds = load_images("mini", target, source=source)
    np.testing.assert_array_equal(ds.y_train.numpy(), data["train"][1])
    assert sorted(p.name for p in target.iterdir()) == sorted(source.files)  # no leftovers


def test_a_corrupted_download_is_refused_and_not_kept(tmp_path, server):
    root, url = server
    write_idx_set(root)
    files = _md5s(root)
    files["train-images-idx3-ubyte.gz"] = "0" * 32
    source = ImageSource("mini", files, (url,), "idx", (1, 28, 28))
    target = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="checksum mismatch"):
        load_images("mini", target, source=source)
    assert not (target / "train-images-idx3-ubyte.gz").exists()
    assert not [p for p in target.iterdir() if p.name.endswith(".part")]


def test_offline_error_names_folder_files_and_urls(tmp_path):
    source = ImageSource("mini", dict(SOURCES["mnist"].files), ("http://127.0.0.1:1/",),
                         "idx", (1, 28, 28))
    with pytest.raises(FileNotFoundError) as info:
        load_images("mini", tmp_path / "offline", source=source)
    text = str(info.value)
    assert str(tmp_path / "offline") in text and "train-images-idx3-ubyte.gz" in text
    assert "http://127.0.0.1:1/train-images-idx3-ubyte.gz" in text


def test_the_published_checksums_are_the_ones_of_the_official_files():
    assert SOURCES["mnist"].files["train-images-idx3-ubyte.gz"] == \
        "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert SOURCES["fashion_mnist"].files["t10k-labels-idx1-ubyte.gz"] == \
        "bb300cfdad3c16e7a12a480ee83cd310"
    assert SOURCES["cifar10"].files == {"cifar-10-python.tar.gz":
                                        "c58f30108f718f92721af3b95e74349a"}


# ---------------------------------------------------------------------- bad files
def test_bad_files_get_clear_errors(tmp_path):
    write_idx_set(tmp_path / "a")
    (tmp_path / "a" / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(11, np.uint8))))
    with pytest.raises(ValueError, match="12 train images but 11 labels"):
        load_mnist(tmp_path / "a", download=False)
    write_idx_set(tmp_path / "b")
    raw = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    (tmp_path / "b" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x09\x03" +
                                                                             raw[4:]))
    with pytest.raises(ValueError, match="magic number"):
        load_mnist(tmp_path / "b", download=False)
    write_idx_set(tmp_path / "c", side=20)
    with pytest.raises(ValueError, match="20x20 pixels"):
        load_mnist(tmp_path / "c", download=False)
    write_idx_set(tmp_path / "d")
    (tmp_path / "d" / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="delete it"):
        load_mnist(tmp_path / "d", download=False)
    write_idx_set(tmp_path / "e")
    (tmp_path / "e" / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.full(5, 12, np.uint8))))
    with pytest.raises(ValueError, match=r"label 12 outside 0\.\.9"):
        load_mnist(tmp_path / "e", download=False)
    with pytest.raises(ValueError, match="unknown data set"):
        load_images("imagenet", tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        load_mnist(tmp_path / "file")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path):
    write_cifar(tmp_path, archive=False)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(
        pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2))
    with pytest.raises(ValueError, match="refused to load"):
        load_cifar10(tmp_path, download=False)


def test_a_cifar_archive_missing_batches_says_which(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        _, _, raw = cifar_batch(2)
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    with pytest.raises(ValueError, match="lacks the batches data_batch_2"):
        load_cifar10(tmp_path, download=False)


# ---------------------------------------------------------------------- training on the files
def write_learnable_idx_set(folder, per_class=12, n_test=20):
    """MNIST-format files whose class k lights a 6x6 square at its own place (plus noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(5)
    for part, count in (("train", 10 * per_class), ("t10k", n_test)):
        y = np.arange(count) % 10
        X = gen.integers(0, 40, (count, 28, 28))
        for i, k in enumerate(y):
            r, c = divmod(int(k), 5)
            X[i, 4 + 12 * r: 10 + 12 * r, 1 + 5 * c: 6 + 5 * c] = 255
        for stem, a in ((f"{part}-images-idx3-ubyte", X), (f"{part}-labels-idx1-ubyte", y)):
            (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(a)))


@needs_mpi
@pytest.mark.mpi
def test_a_cnn_learns_the_files_under_mpiexec_4(tmp_path):
    write_learnable_idx_set(tmp_path)
    out = run_mpi("image_training_checks.py", 4, str(tmp_path), timeout=240)
    lines = re.findall(r"IMAGES-OK rank (\d+) of 4: first loss ([\d.]+), last loss ([\d.]+)",
                       out)
    assert sorted(int(r) for r, _, _ in lines) == [0, 1, 2, 3], out[-3000:]
