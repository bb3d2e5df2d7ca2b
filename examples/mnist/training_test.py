"""Connectivity test for training jobs: a few hundred steps of softmax regression on MNIST.

A TensorFlow 1.x script as PAI-TF ran it (the seed's first job): it reads MNIST from the volume
partitions passed in ``--volumes``, trains, prints ``accuracy: 0.xxxx`` on the test set and
writes nothing. With liqi::

    liqi console -e "add file examples/mnist/training_test.py;
      pai -name tensorflow -Dscript=\"odps://default/resources/training_test.py\"
          -Dvolumes=\"odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test\";"

or, without a server::

    python -m liqi.training.launcher --tf1 examples/mnist/training_test.py \\
        --volumes=<...>/mnist/train,<...>/mnist/test
"""

import os

import tensorflow as tf
from tensorflow.examples.tutorials.mnist import input_data

flags = tf.app.flags
flags.DEFINE_string("buckets", "", "Output folder (unused: this test writes nothing).")
flags.DEFINE_string("volumes", "", "The MNIST partitions, comma-separated: train dir, test dir.")
flags.DEFINE_integer("steps", 300, "Training steps.")
flags.DEFINE_integer("batch_size", 100, "Images per step.")
flags.DEFINE_float("learning_rate", 0.5, "Gradient descent step size.")
FLAGS = flags.FLAGS


def mnist_dir(volumes):
    """The MNIST folder behind ``--volumes``.

    PAI gives one folder per partition (``.../mnist/train,.../mnist/test``); the reader wants
    the volume that holds them, their parent. Without volumes, ``MNIST_data``.
    """
    dirs = [d.rstrip("/") for d in volumes.split(",") if d.strip()]
    if not dirs:
        return "MNIST_data"
    if os.path.basename(dirs[0]) in ("train", "test"):
        return os.path.dirname(dirs[0])
    return dirs[0]


def main(_):
    mnist = input_data.read_data_sets(mnist_dir(FLAGS.volumes))

    x = tf.placeholder(tf.float32, [None, 784])
    y_ = tf.placeholder(tf.int64, [None])
    w = tf.Variable(tf.zeros([784, 10]))
    b = tf.Variable(tf.zeros([10]))
    logits = tf.matmul(x, w) + b
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y_, logits=logits))
    train_step = tf.train.GradientDescentOptimizer(FLAGS.learning_rate).minimize(loss)
    correct = tf.equal(tf.argmax(logits, 1), y_)
    accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))

    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for _step in range(FLAGS.steps):
            batch_xs, batch_ys = mnist.train.next_batch(FLAGS.batch_size)
            sess.run(train_step, feed_dict={x: batch_xs, y_: batch_ys})
        test_feed = {x: mnist.test.images, y_: mnist.test.labels}
        print(f"accuracy: {sess.run(accuracy, feed_dict=test_feed):.4f}")


if __name__ == "__main__":
    tf.app.run()
