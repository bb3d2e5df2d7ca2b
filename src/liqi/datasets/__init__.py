"""Datasets that ship with liqi, and readers for their file formats.

The built-in MNIST sample (4,000 training and 1,000 test images in IDX files, the content of
the volume ``odps://algo_platform/volumes/mnist``) lives in the ``mnist`` folder of this
package. Read it, or any directory of MNIST IDX files, as TensorFlow 1's ``input_data`` did::

    from liqi.datasets.mnist import builtin_dir, read_data_sets

    mnist = read_data_sets(builtin_dir(), one_hot=True)
    images, labels = mnist.train.next_batch(100)

``from liqi.datasets import read_data_sets`` is the same function. See docs/datasets.md.
"""

from __future__ import annotations

from liqi.datasets.idx import decode_idx, encode_idx, read_idx, write_idx
from liqi.datasets.mnist_reader import DataSet, Datasets, builtin_dir, read_data_sets

__all__ = [
    "DataSet",
    "Datasets",
    "builtin_dir",
    "decode_idx",
    "encode_idx",
    "read_data_sets",
    "read_idx",
    "write_idx",
]
