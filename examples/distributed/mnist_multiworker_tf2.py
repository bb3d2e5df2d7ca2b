"""Synchronous data-parallel softmax regression on MNIST: a TensorFlow 2 multi-worker job.

Every worker runs this script; ``tf.distribute.MultiWorkerMirroredStrategy`` reads the cluster
and this task's place in it from ``TF_CONFIG`` and keeps one copy of the Keras model per worker,
averaging the gradients of each step across the workers (all-reduce, no parameter server). Each
worker reads its shard of the training set; worker 0 (the chief) prints ``accuracy: 0.xxxx`` on
the test set at the end. With liqi::

    liqi console -e "add file examples/distributed/mnist_multiworker_tf2.py;
      pai -name tensorflow2 -Dscript=\"odps://default/resources/mnist_multiworker_tf2.py\"
          -Dvolumes=\"odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test\"
          -Dcluster='{\"worker\":{\"count\":2}}';"

liqi sets ``TF_CONFIG`` for each task (and passes ``--worker_hosts``, ``--task_index`` and the
other PAI flags, which this script does not need). Without a cluster it trains on its own.
"""

import argparse
import os
import sys

import tensorflow as tf

from liqi.datasets.mnist import builtin_dir, read_data_sets


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", default="", help="The MNIST partitions: train,test dirs.")
    parser.add_argument("--epochs", type=int, default=3, help="Passes over the training set.")
    parser.add_argument("--batch_size", type=int, default=50, help="Images per step per worker.")
    parser.add_argument("--learning_rate", type=float, default=0.5, help="SGD step size.")
    # PAI passes platform flags (--worker_hosts, --task_index, --buckets, ...) not used here.
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


def main(argv):
    args = parse_args(argv)
    # First, before anything else starts TensorFlow's runtime: the strategy reads TF_CONFIG,
    # starts this worker's server and waits until every worker has joined.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    index = strategy.cluster_resolver.task_id or 0
    is_chief = index == 0
    workers = strategy.num_replicas_in_sync
    print(f"worker {index} of {workers} joined (pid {os.getpid()})", flush=True)

    mnist = read_data_sets(mnist_dir(args.volumes))
    tf.keras.utils.set_random_seed(0)  # the same shuffle on every worker: each takes its shard
    global_batch = args.batch_size * workers
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train = (
        tf.data.Dataset.from_tensor_slices((mnist.train.images, mnist.train.labels))
        .shuffle(mnist.train.num_examples, seed=0)
        .batch(global_batch, drop_remainder=True)
        .with_options(options)
    )

    with strategy.scope():  # the variables are mirrored on every worker
        model = tf.keras.Sequential(
            [
                tf.keras.Input(shape=(784,), name="images"),
                tf.keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros"),
            ]
        )
        optimizer = tf.keras.optimizers.SGD(learning_rate=args.learning_rate)
        optimizer.build(model.trainable_variables)

    # A custom loop rather than model.fit: Keras 3's fit does not run under
    # MultiWorkerMirroredStrategy (https://github.com/keras-team/keras/issues/20585).
    @tf.function
    def train_step(batch):
        def step(images, labels):
            with tf.GradientTape() as tape:
                scores = model(images, training=True)
                losses = tf.keras.losses.sparse_categorical_crossentropy(labels, scores)
                loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch)
            gradients = tape.gradient(loss, model.trainable_variables)
            # The optimizer sums the gradients of all the workers before it applies them.
            optimizer.apply(gradients, model.trainable_variables)
            return loss

        losses = strategy.run(step, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    batches = strategy.experimental_distribute_dataset(train)  # this worker's shard
    for epoch in range(1, args.epochs + 1):
        total, steps = 0.0, 0
        for batch in batches:
            total += float(train_step(batch))
            steps += 1
        if is_chief:
            print(f"epoch {epoch}/{args.epochs}: loss {total / steps:.4f}", flush=True)

    print(f"worker {index} ran {args.epochs} epochs of {steps} steps", flush=True)
    if is_chief:  # the workers hold the same model: the chief evaluates its copy
        scores = model(mnist.test.images, training=False)
        correct = tf.equal(tf.argmax(scores, axis=1), tf.cast(mnist.test.labels, tf.int64))
        accuracy = float(tf.reduce_mean(tf.cast(correct, tf.float32)))
        print(f"accuracy: {accuracy:.4f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
