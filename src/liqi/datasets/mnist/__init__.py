"""MNIST with TensorFlow 1's ``input_data`` interface: ``read_data_sets(dir, one_hot=...)``.

This folder is also the built-in MNIST sample itself: ``train/`` and ``test/`` hold the IDX
files of the volume ``odps://algo_platform/volumes/mnist``, and ``PROVENANCE.json`` says where
they come from (``scripts/build-mnist`` rebuilds them). The code is in
:mod:`liqi.datasets.mnist_reader`; TF1 scripts only change their import::

    import liqi.datasets.mnist as input_data

    mnist = input_data.read_data_sets("/data/mnist", one_hot=True)
"""

from __future__ import annotations

from liqi.datasets.mnist_reader import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DataSet,
    Datasets,
    builtin_dir,
    read_data_sets,
)

__all__ = [
    "TEST_IMAGES",
    "TEST_LABELS",
    "TRAIN_IMAGES",
    "TRAIN_LABELS",
    "DataSet",
    "Datasets",
    "builtin_dir",
    "read_data_sets",
]
