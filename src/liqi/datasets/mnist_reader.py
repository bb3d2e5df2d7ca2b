"""MNIST in the IDX files, read the way TensorFlow 1's ``input_data.read_data_sets`` reads it.

Scripts written for TF1's ``tensorflow.examples.tutorials.mnist.input_data`` run unchanged
with ``from liqi.datasets.mnist import read_data_sets`` (or ``import liqi.datasets.mnist as
input_data``): same arguments, same ``train`` / ``validation`` / ``test`` data sets, same
``next_batch`` epochs. Nothing is downloaded and TensorFlow is not imported.

A directory is read in either layout:

* TF1's: one directory holding the four files (``train-images-idx3-ubyte.gz``,
  ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``);
* liqi's volumes: a directory with ``train/`` (the two train files) and ``test/`` (the two
  t10k files), like ``odps://algo_platform/volumes/mnist``, whose files ship with liqi in
  :func:`builtin_dir`.

Each file may also be uncompressed (the same name without ``.gz``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from liqi.datasets.idx import read_idx
from liqi.errors import InvalidRequestError, NotFoundError

__all__ = [
    "DataSet",
    "Datasets",
    "TEST_IMAGES",
    "TEST_LABELS",
    "TRAIN_IMAGES",
    "TRAIN_LABELS",
    "builtin_dir",
    "read_data_sets",
]

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
NUM_CLASSES = 10
_PARTITION = {
    TRAIN_IMAGES: "train",
    TRAIN_LABELS: "train",
    TEST_IMAGES: "test",
    TEST_LABELS: "test",
}


def builtin_dir() -> Path:
    """The directory of the MNIST sample shipped with liqi (``train/`` and ``test/``).

    It holds 4,000 training and 1,000 test images; ``PROVENANCE.json`` in it says where they
    come from. It is the content of the built-in volume ``odps://algo_platform/volumes/mnist``.
    """
    return Path(__file__).resolve().parent / "mnist"


class DataSet:
    """One split of MNIST with TF1's ``DataSet`` interface.

    Args:
        images: uint8 array of shape (n, rows, cols) or (n, rows, cols, 1).
        labels: integer class ids of shape (n,), or one-hot rows of shape (n, classes).
        dtype: ``numpy.float32`` scales pixels to [0, 1]; ``numpy.uint8`` keeps 0..255.
        reshape: flatten each image to a row of rows*cols values (TF1's default); otherwise
            images keep the shape (n, rows, cols, 1).
        seed: seed of the shuffles done by :meth:`next_batch`; None for a fresh one.
    """

    def __init__(
        self,
        images: npt.NDArray[Any],
        labels: npt.NDArray[Any],
        *,
        dtype: Any = np.float32,
        reshape: bool = True,
        seed: int | None = None,
    ) -> None:
        pixel_dtype = _pixel_dtype(dtype)
        if images.ndim == 3:
            images = images[..., np.newaxis]
        if images.ndim != 4 or images.shape[3] != 1:
            raise InvalidRequestError(
                f"MNIST images must have shape (n, rows, cols) or (n, rows, cols, 1), "
                f"not {images.shape}."
            )
        if images.shape[0] != labels.shape[0]:
            raise InvalidRequestError(
                f"There are {images.shape[0]} images but {labels.shape[0]} labels; "
                "each image needs exactly one label."
            )
        if reshape:
            images = images.reshape(images.shape[0], images.shape[1] * images.shape[2])
        if pixel_dtype == np.float32:
            images = images.astype(np.float32) * np.float32(1.0 / 255.0)
        else:
            images = images.astype(np.uint8)
        self._images = images
        self._labels = labels
        self._num_examples = int(images.shape[0])
        self._epochs_completed = 0
        self._index_in_epoch = 0
        self._rng = np.random.default_rng(seed)

    @property
    def images(self) -> npt.NDArray[Any]:
        return self._images

    @property
    def labels(self) -> npt.NDArray[Any]:
        return self._labels

    @property
    def num_examples(self) -> int:
        return self._num_examples

    @property
    def epochs_completed(self) -> int:
        return self._epochs_completed

    def next_batch(
        self, batch_size: int, fake_data: bool = False, shuffle: bool = True
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """The next ``batch_size`` examples, as TF1's ``DataSet.next_batch`` returns them.

        With ``shuffle``, the examples are shuffled before the first batch and again at the
        start of each epoch. A batch that crosses the end of an epoch takes the remaining
        examples of that epoch, then the first ones of the next (so each epoch yields every
        example exactly once), and ``epochs_completed`` goes up by one.

        Raises:
            InvalidRequestError: ``batch_size`` is not between 1 and ``num_examples``, or
                ``fake_data`` is true.
        """
        if fake_data:
            raise InvalidRequestError(_FAKE_DATA_MESSAGE)
        if not 1 <= batch_size <= self._num_examples:
            raise InvalidRequestError(
                f"batch_size must be between 1 and the {self._num_examples} examples of "
                f"this data set, not {batch_size}."
            )
        start = self._index_in_epoch
        if shuffle and self._epochs_completed == 0 and start == 0:
            self._shuffle()
        if start + batch_size <= self._num_examples:
            self._index_in_epoch = start + batch_size
            return self._images[start : self._index_in_epoch], self._labels[
                start : self._index_in_epoch
            ]
        self._epochs_completed += 1
        images_rest = self._images[start:]
        labels_rest = self._labels[start:]
        if shuffle:
            self._shuffle()
        self._index_in_epoch = batch_size - images_rest.shape[0]
        end = self._index_in_epoch
        return (
            np.concatenate((images_rest, self._images[:end]), axis=0),
            np.concatenate((labels_rest, self._labels[:end]), axis=0),
        )

    def _shuffle(self) -> None:
        order = self._rng.permutation(self._num_examples)
        self._images = self._images[order]
        self._labels = self._labels[order]

    def __repr__(self) -> str:
        return (
            f"DataSet(num_examples={self._num_examples}, images={self._images.shape} "
            f"{self._images.dtype}, labels={self._labels.shape} {self._labels.dtype})"
        )


class Datasets(NamedTuple):
    """What :func:`read_data_sets` returns, like TF1's ``base.Datasets``."""

    train: DataSet
    validation: DataSet
    test: DataSet


def read_data_sets(
    train_dir: str | os.PathLike[str],
    fake_data: bool = False,
    one_hot: bool = False,
    dtype: Any = np.float32,
    reshape: bool = True,
    validation_size: int = 0,
    seed: int | None = None,
) -> Datasets:
    """Read MNIST from a directory, with the arguments of TF1's ``input_data.read_data_sets``.

    Args:
        train_dir: a directory holding the four IDX files, or ``train/`` and ``test/``
            subdirectories holding them (the layout of liqi's volumes).
        fake_data: must be False; liqi does not generate fake images.
        one_hot: labels as float64 one-hot rows of shape (n, 10) instead of uint8 class ids.
        dtype: ``numpy.float32`` (pixels scaled to [0, 1]) or ``numpy.uint8`` (0..255); the
            strings "float32"/"uint8" and TensorFlow's ``tf.float32``/``tf.uint8`` work too.
        reshape: images as rows of 784 values (default) rather than (n, 28, 28, 1).
        validation_size: how many of the first training images form ``validation`` instead
            of ``train``. TF1's default is 5000, more than liqi's 4,000-image sample holds, so
            the default here is 0 (an empty validation set).
        seed: seed of the shuffles done by ``next_batch``; None for a fresh one.

    Raises:
        NotFoundError: ``train_dir`` or one of the four files is missing.
        InvalidRequestError: a file is not valid IDX, the counts of images and labels differ,
            or an argument is out of range.
    """
    if fake_data:
        raise InvalidRequestError(_FAKE_DATA_MESSAGE)
    _pixel_dtype(dtype)
    root = Path(train_dir)
    if not root.is_dir():
        raise NotFoundError(
            f"MNIST directory '{root}' does not exist. Pass a directory holding the four IDX "
            f"files, or the built-in sample at '{builtin_dir()}'."
        )
    train_images, train_labels = _read_split(root, TRAIN_IMAGES, TRAIN_LABELS, one_hot)
    test_images, test_labels = _read_split(root, TEST_IMAGES, TEST_LABELS, one_hot)
    if not 0 <= validation_size <= len(train_images):
        raise InvalidRequestError(
            f"validation_size must be between 0 and the {len(train_images)} training images, "
            f"not {validation_size}."
        )
    options: dict[str, Any] = {"dtype": dtype, "reshape": reshape, "seed": seed}
    return Datasets(
        train=DataSet(train_images[validation_size:], train_labels[validation_size:], **options),
        validation=DataSet(
            train_images[:validation_size], train_labels[:validation_size], **options
        ),
        test=DataSet(test_images, test_labels, **options),
    )


_FAKE_DATA_MESSAGE = (
    "fake_data=True is not supported: liqi reads real MNIST files only. Pass fake_data=False "
    "and a directory of MNIST files, for example liqi.datasets.mnist.builtin_dir()."
)


def _pixel_dtype(dtype: Any) -> np.dtype[Any]:
    """numpy's dtype for ``dtype``, which may also be a TensorFlow DType (not imported)."""
    resolved: np.dtype[Any] | None
    try:
        resolved = np.dtype(getattr(dtype, "as_numpy_dtype", dtype))
    except TypeError:
        resolved = None
    if resolved is None or resolved not in (np.dtype(np.float32), np.dtype(np.uint8)):
        raise InvalidRequestError(f"Invalid image dtype {dtype!r}: use numpy.float32 or uint8.")
    return resolved


def _find(root: Path, name: str) -> Path:
    """``name`` (or its uncompressed twin) in ``root`` or in its train/ or test/ folder."""
    folders = (root, root / _PARTITION[name])
    candidates = [folder / file for folder in folders for file in (name, name.removesuffix(".gz"))]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise NotFoundError(
        f"MNIST file '{name}' is missing: looked for "
        + ", ".join(f"'{candidate}'" for candidate in candidates)
        + ". A MNIST directory holds the four IDX files, directly or in train/ and test/."
    )


def _read_split(
    root: Path, images_name: str, labels_name: str, one_hot: bool
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    images_path, labels_path = _find(root, images_name), _find(root, labels_name)
    images, labels = _read_images(images_path), _read_labels(labels_path, one_hot)
    if images.shape[0] != labels.shape[0]:
        raise InvalidRequestError(
            f"'{images_path}' has {images.shape[0]} images but '{labels_path}' has "
            f"{labels.shape[0]} labels; they must come in pairs from the same split."
        )
    return images, labels


def _read_images(path: Path) -> npt.NDArray[Any]:
    images = read_idx(path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise InvalidRequestError(
            f"'{path}' does not hold MNIST images: expected unsigned bytes of shape "
            f"(n, rows, cols) (magic 0x00000803), found {images.dtype} of shape {images.shape}."
        )
    return images


def _read_labels(path: Path, one_hot: bool) -> npt.NDArray[Any]:
    labels = read_idx(path)
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise InvalidRequestError(
            f"'{path}' does not hold MNIST labels: expected unsigned bytes of shape (n,) "
            f"(magic 0x00000801), found {labels.dtype} of shape {labels.shape}."
        )
    if not one_hot:
        return labels
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise InvalidRequestError(
            f"'{path}' has label {int(labels.max())}; one_hot=True needs labels 0 to "
            f"{NUM_CLASSES - 1}."
        )
    encoded = np.zeros((labels.shape[0], NUM_CLASSES), dtype=np.float64)
    encoded[np.arange(labels.shape[0]), labels] = 1.0
    return encoded
