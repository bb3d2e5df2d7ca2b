"""Softmax regression on MNIST in Keras (TensorFlow 2), exported as a SavedModel for serving.

The model of ``mnist_softmax.py`` written for TensorFlow 2: it reads MNIST with liqi's reader
from the volume partitions passed in ``--volumes`` (liqi's built-in sample without them),
trains, prints ``accuracy: 0.xxxx`` on the test set, and exports to
``<buckets>/<export_version>/`` with ``tf.saved_model.save``. The signatures
``predict_images`` and ``serving_default`` take ``images``, float32 [-1, 784] (pixels scaled
to [0, 1]) and return ``scores``, float32 [-1, 10] (the probability of each digit), as the
TF1 example's do. With liqi::

    liqi console -e "add file examples/mnist/mnist_softmax_tf2.py;
      pai -name tensorflow2 -Dscript=\"odps://default/resources/mnist_softmax_tf2.py\"
          -Dvolumes=\"odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test\"
          -Dbuckets=\"oss://<bucket>/models/\";"

or, without a server (no ``--tf1``: the script runs as it is)::

    python -m liqi.training.launcher examples/mnist/mnist_softmax_tf2.py \\
        --volumes=<...>/mnist/train,<...>/mnist/test --buckets=/tmp/out/
"""

import argparse
import os
import sys

import tensorflow as tf

from liqi.datasets.mnist import builtin_dir, read_data_sets


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buckets", default="", help="Folder the model is exported to.")
    parser.add_argument("--volumes", default="", help="The MNIST partitions: train,test dirs.")
    parser.add_argument("--export_version", type=int, default=1, help="<buckets>/<version>/.")
    parser.add_argument("--epochs", type=int, default=25, help="Passes over the training set.")
    parser.add_argument("--batch_size", type=int, default=100, help="Images per step.")
    parser.add_argument("--learning_rate", type=float, default=0.5, help="SGD step size.")
    # PAI passes platform flags (--checkpointDir, --tables, ...) this script does not use.
    args, _platform_flags = parser.parse_known_args(argv)
    return args


def mnist_dir(volumes):
    """The MNIST folder behind ``--volumes``: the parent of the train and test partitions."""
    dirs = [d.rstrip("/") for d in volumes.split(",") if d.strip()]
    if not dirs:
        return builtin_dir()
    if os.path.basename(dirs[0]) in ("train", "test"):
        return os.path.dirname(dirs[0])
    return dirs[0]


class Softmax(tf.Module):
    """What is served: the Keras model behind a ``predict_images`` function."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="images")])
    def predict_images(self, images):
        return {"scores": self.model(images, training=False)}


def main(argv):
    args = parse_args(argv)
    if not args.buckets:
        sys.exit("mnist_softmax_tf2.py: no --buckets: pass the folder to export the model to.")
    export_dir = os.path.join(args.buckets, str(args.export_version))
    if os.path.exists(export_dir):
        sys.exit(
            f"mnist_softmax_tf2.py: {export_dir} already exists. Pass "
            f"--export_version={args.export_version + 1} to export a new version beside it."
        )
    mnist = read_data_sets(mnist_dir(args.volumes))

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(784,), name="images"),
            tf.keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros"),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.SGD(learning_rate=args.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        mnist.train.images,
        mnist.train.labels,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=2,
    )
    _, accuracy = model.evaluate(mnist.test.images, mnist.test.labels, verbose=0)
    print(f"accuracy: {accuracy:.4f}")

    module = Softmax(model)
    predict = module.predict_images.get_concrete_function()
    tf.saved_model.save(
        module, export_dir, signatures={"predict_images": predict, "serving_default": predict}
    )
    print(f"exported the model to {export_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
