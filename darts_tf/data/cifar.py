"""CIFAR-10 and CIFAR-100 in the official python format, unpickled with only what their batches hold
(see docs/security.md)."""

from __future__ import annotations

import codecs
import io
import os
import pickle
import tarfile

import numpy as np

from darts_tf.data.image_data import CIFAR10_CLASSES, CIFAR_MEAN, CIFAR_STD, ImageData, _from_arrays
from darts_tf.errors import DataError

# What the official CIFAR python batches (and CIFAR-100's) are made of: dicts, lists, bytes,
# str and ints, plus NumPy's array reconstruction (written by NumPy 1.x or 2.x, Python 2 or 3).
_RECONSTRUCT, _ = np.zeros(1).__reduce__()[:2]


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # protocol-2 bytes written by Python 3
    ("builtins", "bytes"): bytes,
    ("__builtin__", "bytes"): bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only the types a CIFAR batch holds; any other global is refused before it is looked up."""

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            message = f"it asks for the global {module}.{name}, which a CIFAR batch never holds"
            raise pickle.UnpicklingError(message) from None


def _unpickle(handle, source: str) -> dict:
    """Reads one CIFAR python batch without running code from it (DataError naming `source` otherwise)."""
    try:
        batch = _RestrictedUnpickler(handle, encoding="bytes").load()
    except Exception as error:  # a corrupt pickle can fail in many ways; none may escape as a traceback
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"refused to read {source!r} as a CIFAR batch: {reason}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{source!r} is not a CIFAR batch: expected a dict, found {type(batch).__name__}")
    return batch


def _batch_arrays(batch: dict, label_key: bytes = b"labels", classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(batch[label_key], dtype=np.int32)
    if labels.shape != (len(images),) or labels.min(initial=0) < 0 or labels.max(initial=0) >= classes:
        raise DataError(f"{len(images)} images need as many labels in 0..{classes - 1}, found shape {labels.shape}")
    return images, labels


def load_cifar10_python(path: str) -> ImageData:
    """Reads CIFAR-10 in the official python-batch format (folder or .tar.gz archive).

    The image count is read from the files (partial copies are fine).
    """
    path = os.path.expanduser(path)
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    batches = {}
    if os.path.isfile(path) and tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():  # read in memory: nothing is extracted to disk
                base = os.path.basename(member.name)
                if member.isfile() and (base in train_names or base == "test_batch"):
                    source = f"{path}:{member.name}"
                    batches[base] = _unpickle(io.BytesIO(archive.extractfile(member).read()), source)
    elif os.path.isdir(path):
        folder = path
        nested = os.path.join(path, "cifar-10-batches-py")
        if not os.path.exists(os.path.join(path, "data_batch_1")) and os.path.isdir(nested):
            folder = nested
        for base in train_names + ["test_batch"]:
            file = os.path.join(folder, base)
            if os.path.exists(file):
                with open(file, "rb") as handle:
                    batches[base] = _unpickle(handle, file)
    else:
        raise DataError(f"`data_dir` {path!r} does not exist (expected a cifar-10-batches-py folder or its .tar.gz)")
    missing = [name for name in train_names + ["test_batch"] if name not in batches]
    if missing:
        raise DataError(f"`data_dir` {path!r} is not CIFAR-10 python batches: missing {', '.join(missing)}")
    try:
        train = [_batch_arrays(batches[name]) for name in train_names]
        test_images, test_labels = _batch_arrays(batches["test_batch"])
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"`data_dir` {path!r}: unreadable CIFAR-10 batch ({error})") from None
    return ImageData(
        train_images=np.concatenate([t[0] for t in train]),
        train_labels=np.concatenate([t[1] for t in train]),
        test_images=test_images,
        test_labels=test_labels,
        num_classes=10,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        name="cifar10",
        class_names=CIFAR10_CLASSES,
        description=f"CIFAR-10 python batches at {path}",
    )


def load_cifar100_python(path: str) -> ImageData:
    """CIFAR-100 in the official python format: a folder with `train`, `test` and `meta` (fine labels)."""
    batches = {}
    for base in ("train", "test", "meta"):
        file = os.path.join(path, base)
        with open(file, "rb") as handle:
            batches[base] = _unpickle(handle, file)
    try:
        names = [bytes(n).decode() for n in batches["meta"][b"fine_label_names"]]
        train = _batch_arrays(batches["train"], b"fine_labels", len(names))
        test = _batch_arrays(batches["test"], b"fine_labels", len(names))
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"`data_dir` {path!r}: unreadable CIFAR-100 batch ({error})") from None
    return _from_arrays("cifar100", train, test, names, f"CIFAR-100 python batches at {path}")
