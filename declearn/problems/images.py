r"""Image classification data from the standard files: MNIST, Fashion-MNIST and CIFAR-10.

:func:`load_images` (and its three shortcuts) reads a data set from a local folder and returns
a :class:`~declearn.problems.data.Dataset` with pixels scaled to [0, 1]: ``X_*`` of shape
``(N, C, H, W)`` (``flatten=True``: ``(N, C H W)``), ``y_*`` int64 labels 0..9.

The files are the ones the data sets' authors publish, in their own formats:

* MNIST and Fashion-MNIST: four IDX files, ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each
  gzipped (``.gz``, as published) or not. An IDX file is a big-endian header, the magic number
  ``0x0000080D`` with ``D`` the number of dimensions (``08``: unsigned bytes), then ``D`` sizes
  as 32-bit integers, then the values row by row.
* CIFAR-10: the archive ``cifar-10-python.tar.gz`` (or the folder ``cifar-10-batches-py`` it
  holds): five training batches and one test batch of 10000 images, each a pickled dict whose
  ``b"data"`` is a ``(10000, 3072)`` uint8 array (the red, green then blue 32x32 planes of
  each image) and ``b"labels"`` a list. The pickles are read with an unpickler that accepts
  only numpy's array reconstruction, so a tampered file cannot run code.

**Where the files are.** ``folder`` if given, else ``$DECLEARN_DATA/<name>`` if that variable
is set, else ``~/.cache/declearn/<name>``. Files already there are parsed as they are (their
format and sizes are checked, not their checksums: a teacher may ship a subset). Missing files
are downloaded when ``download=True`` (the default), from each mirror of the source in turn,
into a temporary file that is renamed only once its MD5 matches the published checksum. Offline,
the error names the folder, the missing files and where to get them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from declearn.problems.data import Dataset

__all__ = ["ImageSource", "SOURCES", "data_folder", "images_available", "load_images",
           "load_mnist", "load_fashion_mnist", "load_cifar10"]

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_DOWNLOAD_TIMEOUT = 30.0  # seconds without data before a mirror is given up


@dataclass(frozen=True)
class ImageSource:
    """A data set's published files: ``files`` maps each file name to its MD5, ``mirrors``
    are base URLs tried in order (``mirror + file name``), ``layout`` is ``"idx"`` or
    ``"cifar"``, ``shape`` the ``(C, H, W)`` of one image."""

    name: str
    files: dict
    mirrors: tuple
    layout: str
    shape: tuple
    classes: int = 10


SOURCES = {
    "mnist": ImageSource(
        "mnist",
        {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "http://yann.lecun.com/exdb/mnist/"),
        "idx", (1, 28, 28)),
    "fashion_mnist": ImageSource(
        "fashion_mnist",
        {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "idx", (1, 28, 28)),
    "cifar10": ImageSource(
        "cifar10",
        {_CIFAR_ARCHIVE: "c58f30108f718f92721af3b95e74349a"},
        ("https://www.cs.toronto.edu/~kriz/",),
        "cifar", (3, 32, 32)),
}


def data_folder(name: str, folder=None) -> Path:
    """The folder that holds data set ``name``'s files (see the module docstring)."""
    if folder is not None:
        return Path(folder).expanduser()
    root = os.environ.get("DECLEARN_DATA")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "declearn"
    return base / name


def images_available(name: str, folder=None) -> bool:
    """Whether data set ``name``'s files are all in its folder (nothing is downloaded)."""
    if name not in SOURCES:
        raise ValueError(f"unknown data set {name!r}: use one of {sorted(SOURCES)}.")
    source, where = SOURCES[name], data_folder(name, folder)
    return all(_present(where, source, f) for f in source.files)


def load_images(name: str, folder=None, *, download: bool = True, flatten: bool = False,
                dtype: torch.dtype = torch.float32, source: ImageSource | None = None) -> Dataset:
    """Data set ``name`` (a key of :data:`SOURCES`) as a :class:`Dataset`, read from
    ``folder`` (see :func:`data_folder`); missing files are downloaded if ``download``.
    ``source`` replaces the published one (other mirrors or checksums)."""
    if source is None:
        if name not in SOURCES:
            raise ValueError(f"unknown data set {name!r}: use one of {sorted(SOURCES)}.")
        source = SOURCES[name]
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r}.")
    where = data_folder(name, folder)
    if where.exists() and not where.is_dir():
        raise NotADirectoryError(f"{where} is a file; pass folder= a directory for {name}.")
    _fetch_missing(source, where, download)
    if source.layout == "idx":
        arrays = _read_idx_set(where, source)
    elif source.layout == "cifar":
        arrays = _read_cifar(where)
    else:
        raise ValueError(f"layout must be 'idx' or 'cifar', got {source.layout!r}.")
    Xtr, ytr, Xte, yte = arrays

    def images(a: np.ndarray) -> torch.Tensor:
        x = torch.tensor(a, dtype=dtype).div_(255.0)
        x = x.reshape((a.shape[0],) + tuple(source.shape))
        return x.reshape(a.shape[0], -1) if flatten else x

    return Dataset(images(Xtr), torch.tensor(ytr, dtype=torch.int64), images(Xte),
                   torch.tensor(yte, dtype=torch.int64), classes=source.classes,
                   name=source.name)


def load_mnist(folder=None, **options) -> Dataset:
    """MNIST (60000 training and 10000 test images of handwritten digits, 1x28x28)."""
    return load_images("mnist", folder, **options)


def load_fashion_mnist(folder=None, **options) -> Dataset:
    """Fashion-MNIST (60000 + 10000 images of clothes in 10 classes, 1x28x28)."""
    return load_images("fashion_mnist", folder, **options)


def load_cifar10(folder=None, **options) -> Dataset:
    """CIFAR-10 (50000 + 10000 colour images in 10 classes, 3x32x32)."""
    return load_images("cifar10", folder, **options)


# ---------------------------------------------------------------------- files and downloads
def _present(where: Path, source: ImageSource, filename: str) -> bool:
    """Whether ``filename`` (or what stands for it) is in ``where``: an IDX file also counts
    unzipped, the CIFAR archive also as its extracted folder."""
    if (where / filename).is_file():
        return True
    if source.layout == "idx" and filename.endswith(".gz"):
        return (where / filename[:-3]).is_file()
    if source.layout == "cifar":
        return (where / _CIFAR_FOLDER).is_dir()
    return False


def _fetch_missing(source: ImageSource, where: Path, download: bool) -> None:
    missing = [f for f in source.files if not _present(where, source, f)]
    if not missing:
        return
    urls = [m + f for f in missing for m in source.mirrors]
    how = (f"Copy them there from a machine that is online (published at: {', '.join(urls)}), "
           f"or pass folder= (or set DECLEARN_DATA) to where they are.")
    if not download:
        raise FileNotFoundError(
            f"{source.name}: {', '.join(missing)} not found in {where} and download=False. {how}")
    where.mkdir(parents=True, exist_ok=True)
    for filename in missing:
        errors = []
        for mirror in source.mirrors:
            try:
                _download(mirror + filename, where / filename, source.files[filename])
                break
            except (urllib.error.URLError, OSError, ValueError) as error:
                errors.append(f"{mirror + filename}: {error}")
        else:
            raise FileNotFoundError(
                f"{source.name}: {filename} is not in {where} and could not be downloaded "
                f"({'; '.join(errors)}). {how}")


def _download(url: str, target: Path, md5: str) -> None:
    """``url`` into ``target`` through a temporary file renamed once its MD5 is ``md5``."""
    digest = hashlib.md5(usedforsecurity=False)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, \
                urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT) as response:
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != md5:
            raise ValueError(f"checksum mismatch (MD5 {digest.hexdigest()}, published {md5}); "
                             "the download was corrupted or the file changed")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------- IDX (MNIST family)
def _open_idx(where: Path, stem: str) -> bytes:
    gz = where / f"{stem}.gz"
    if gz.is_file():
        try:
            return gzip.decompress(gz.read_bytes())
        except (OSError, EOFError) as error:
            raise ValueError(f"{gz} is not a readable gzip file ({error}); delete it and "
                             "load again to download it anew.") from None
    return (where / stem).read_bytes()


def _parse_idx(raw: bytes, path: str, dims: int) -> np.ndarray:
    """The array of an IDX file of unsigned bytes with ``dims`` dimensions."""
    if len(raw) < 4 + 4 * dims:
        raise ValueError(f"{path} is too short for an IDX header ({len(raw)} bytes).")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != 0x0800 + dims:
        raise ValueError(f"{path} is not an IDX file of {dims}-D unsigned bytes (magic number "
                         f"{magic:#010x}, expected {0x0800 + dims:#010x}).")
    sizes = struct.unpack(f">{dims}I", raw[4:4 + 4 * dims])
    body = raw[4 + 4 * dims:]
    if len(body) != int(np.prod(sizes)):
        raise ValueError(f"{path}: the header announces {sizes} values "
                         f"({int(np.prod(sizes))} bytes) but the file holds {len(body)}.")
    return np.frombuffer(body, dtype=np.uint8).reshape(sizes)


def _read_idx_set(where: Path, source: ImageSource):
    out = []
    for part in ("train", "t10k"):
        stem_x, stem_y = f"{part}-images-idx3-ubyte", f"{part}-labels-idx1-ubyte"
        X = _parse_idx(_open_idx(where, stem_x), str(where / stem_x), 3)
        y = _parse_idx(_open_idx(where, stem_y), str(where / stem_y), 1)
        if X.shape[1:] != tuple(source.shape[1:]):
            raise ValueError(f"{where / stem_x}: images of {X.shape[1]}x{X.shape[2]} pixels, "
                             f"{source.name} has {source.shape[1]}x{source.shape[2]}.")
        if len(X) != len(y):
            raise ValueError(f"{where}: {len(X)} {part} images but {len(y)} labels.")
        _check_labels(y, source, str(where / stem_y))
        out += [X.reshape(len(X), -1), y]
    return out


def _check_labels(y: np.ndarray, source: ImageSource, path: str) -> None:
    if y.size and int(y.max()) >= source.classes:
        raise ValueError(f"{path}: label {int(y.max())} outside 0..{source.classes - 1}.")


# ---------------------------------------------------------------------- CIFAR-10
class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays; refuses every other global (code)."""

    _ALLOWED: ClassVar[set] = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR-10 batch holds "
                                     "only arrays and lists")


def _cifar_batches(where: Path):
    """name -> bytes of the six batches, from the extracted folder or the archive."""
    folder = where / _CIFAR_FOLDER
    if folder.is_dir():
        return {b: (folder / b).read_bytes() for b in _CIFAR_BATCHES
                if (folder / b).is_file()}, str(folder)
    archive = where / _CIFAR_ARCHIVE
    found = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in _CIFAR_BATCHES:
                    found[base] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ValueError(f"{archive} is not a readable tar.gz archive ({error}); delete it and "
                         "load again to download it anew.") from None
    return found, str(archive)


def _read_cifar(where: Path):
    batches, origin = _cifar_batches(where)
    missing = [b for b in _CIFAR_BATCHES if b not in batches]
    if missing:
        raise ValueError(f"{origin} lacks the batches {', '.join(missing)}.")
    parts = {}
    for name in _CIFAR_BATCHES:
        try:
            batch = _ArraysOnly(io.BytesIO(batches[name]), encoding="bytes").load()
            X = np.asarray(batch[b"data"], dtype=np.uint8)
            y = np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, KeyError, TypeError, EOFError) as error:
            raise ValueError(f"{origin}: batch {name} is not a CIFAR-10 batch ({error}).") \
                from None
        if X.ndim != 2 or X.shape[1] != 3 * 32 * 32 or len(X) != len(y):
            raise ValueError(f"{origin}: batch {name} holds data of shape {X.shape} and "
                             f"{len(y)} labels; expected (N, 3072) and N labels.")
        _check_labels(y, SOURCES["cifar10"], f"{origin}:{name}")
        parts[name] = (X, y)
    train = [parts[b] for b in _CIFAR_BATCHES[:-1]]
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
            *parts["test_batch"])
