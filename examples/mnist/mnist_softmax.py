"""Softmax regression on MNIST, exported as a SavedModel for serving (the seed's training job).

A TensorFlow 1.x script as PAI-TF ran it: it reads MNIST from the volume partitions passed in
``--volumes``, trains, prints ``accuracy: 0.xxxx`` on the test set, and exports the model to
``<buckets>/<export_version>/`` (``saved_model.pb`` and ``variables/``), the layout TF Serving
and EAS's ``tensorflow_cpu`` processor load from ``model_path = oss://<bucket>/models/``.

Its signature ``predict_images`` (also the default one, ``serving_default``) takes ``images``,
float32 [-1, 784] (pixels scaled to [0, 1]) and returns ``scores``, float32 [-1, 10] (the
probability of each digit). With liqi::

    liqi console -e "add file examples/mnist/mnist_softmax.py;
      pai -name tensorflow121 -Dscript=\"odps://default/resources/mnist_softmax.py\"
          -Dvolumes=\"odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test\"
          -Dbuckets=\"oss://<bucket>/models/\";"

or, without a server::

    python -m liqi.training.launcher --tf1 examples/mnist/mnist_softmax.py \\
        --volumes=<...>/mnist/train,<...>/mnist/test --buckets=/tmp/out/
"""

import os
import sys

import tensorflow as tf
from tensorflow.examples.tutorials.mnist import input_data

flags = tf.app.flags
flags.DEFINE_string("buckets", "", "Folder the model is exported to (PAI: -Dbuckets).")
flags.DEFINE_string("volumes", "", "The MNIST partitions, comma-separated: train dir, test dir.")
flags.DEFINE_integer("export_version", 1, "Version folder of the export: <buckets>/<version>/.")
flags.DEFINE_integer("steps", 1000, "Training steps.")
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


def export(sess, images, scores, export_dir):
    """Write the graph and variables of ``sess`` as a SavedModel for serving."""
    builder = tf.saved_model.builder.SavedModelBuilder(export_dir)
    signature = tf.saved_model.signature_def_utils.build_signature_def(
        inputs={"images": tf.saved_model.utils.build_tensor_info(images)},
        outputs={"scores": tf.saved_model.utils.build_tensor_info(scores)},
        method_name=tf.saved_model.signature_constants.PREDICT_METHOD_NAME,
    )
    builder.add_meta_graph_and_variables(
        sess,
        [tf.saved_model.tag_constants.SERVING],
        signature_def_map={
            "predict_images": signature,
            tf.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY: signature,
        },
    )
    builder.save()


def main(_):
    if not FLAGS.buckets:
        sys.exit(
            "mnist_softmax.py: no --buckets: pass the folder to export the model to "
            "(PAI: -Dbuckets=oss://<bucket>/models/)."
        )
    export_dir = os.path.join(FLAGS.buckets, str(FLAGS.export_version))
    if tf.gfile.Exists(export_dir):
        sys.exit(
            f"mnist_softmax.py: {export_dir} already exists. Pass "
            f"--export_version={FLAGS.export_version + 1} to export a new version beside it."
        )
    mnist = input_data.read_data_sets(mnist_dir(FLAGS.volumes))

    images = tf.placeholder(tf.float32, [None, 784], name="images")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    weights = tf.Variable(tf.zeros([784, 10]), name="weights")
    biases = tf.Variable(tf.zeros([10]), name="biases")
    logits = tf.matmul(images, weights) + biases
    scores = tf.nn.softmax(logits, name="scores")
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )
    train_step = tf.train.GradientDescentOptimizer(FLAGS.learning_rate).minimize(loss)
    correct = tf.equal(tf.argmax(scores, 1), labels)
    accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))

    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for step in range(1, FLAGS.steps + 1):
            batch_images, batch_labels = mnist.train.next_batch(FLAGS.batch_size)
            _, batch_loss = sess.run(
                [train_step, loss], feed_dict={images: batch_images, labels: batch_labels}
            )
            if step % 200 == 0:
                print(f"step {step}: loss {batch_loss:.4f}")
        test_feed = {images: mnist.test.images, labels: mnist.test.labels}
        print(f"accuracy: {sess.run(accuracy, feed_dict=test_feed):.4f}")
        export(sess, images, scores, export_dir)
    print(f"exported the model to {export_dir}")


if __name__ == "__main__":
    tf.app.run()
