"""Between-graph replicated softmax regression on MNIST: a TensorFlow 1.x parameter-server job.

Written as for PAI-TF: each task of the cluster runs this script with ``--ps_hosts``,
``--worker_hosts``, ``--job_name`` and ``--task_index``. The parameter servers hold the
variables and serve them until the job ends (``server.join()``); every worker builds its own
copy of the graph (``tf.train.replica_device_setter`` puts the variables on the ps tasks) and
trains asynchronously in a ``tf.train.MonitoredTrainingSession`` until the shared
``global_step`` reaches ``--train_steps``. Worker 0 is the chief: it initializes the variables
and prints ``accuracy: 0.xxxx`` on the test set at the end. With liqi::

    liqi console -e "add file examples/distributed/mnist_between_graph_tf1.py;
      pai -name tensorflow -Dscript=\"odps://default/resources/mnist_between_graph_tf1.py\"
          -Dvolumes=\"odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test\"
          -Dcluster='{\"ps\":{\"count\":1},\"worker\":{\"count\":2}}';"

liqi starts the three tasks on loopback ports, ends the job when the workers are done and
then stops the parameter server (``liqi job logs <id> --task worker:1`` or ``--task ps:0``
shows the other tasks' output).
"""

import os

import tensorflow as tf
from tensorflow.examples.tutorials.mnist import input_data

flags = tf.app.flags
flags.DEFINE_string("ps_hosts", "", "Parameter servers, comma-separated host:port.")
flags.DEFINE_string("worker_hosts", "", "Workers, comma-separated host:port.")
flags.DEFINE_string("job_name", "", "This task's job: ps or worker.")
flags.DEFINE_integer("task_index", 0, "This task's index in its job; worker 0 is the chief.")
flags.DEFINE_string("volumes", "", "The MNIST partitions, comma-separated: train dir, test dir.")
flags.DEFINE_integer("train_steps", 600, "Training steps of all the workers together.")
flags.DEFINE_integer("batch_size", 100, "Images per step.")
flags.DEFINE_float("learning_rate", 0.5, "Gradient descent step size.")
FLAGS = flags.FLAGS


def mnist_dir(volumes):
    """The MNIST folder behind ``--volumes``: the parent of the train and test partitions."""
    dirs = [d.rstrip("/") for d in volumes.split(",") if d.strip()]
    if not dirs:
        return "MNIST_data"
    if os.path.basename(dirs[0]) in ("train", "test"):
        return os.path.dirname(dirs[0])
    return dirs[0]


def main(_):
    if FLAGS.job_name not in ("ps", "worker") or not FLAGS.worker_hosts:
        raise SystemExit(
            "mnist_between_graph_tf1.py runs as a task of a cluster: pass --ps_hosts, "
            "--worker_hosts, --job_name=ps|worker and --task_index "
            '(with liqi: -Dcluster=\'{"ps":{"count":1},"worker":{"count":2}}\').'
        )
    cluster = tf.train.ClusterSpec(
        {"ps": FLAGS.ps_hosts.split(","), "worker": FLAGS.worker_hosts.split(",")}
    )
    server = tf.train.Server(cluster, job_name=FLAGS.job_name, task_index=FLAGS.task_index)
    if FLAGS.job_name == "ps":
        print(f"ps {FLAGS.task_index} serving the variables (pid {os.getpid()})", flush=True)
        server.join()  # until the job ends: liqi stops the ps tasks when the workers are done
        return

    is_chief = FLAGS.task_index == 0
    mnist = input_data.read_data_sets(mnist_dir(FLAGS.volumes))
    worker_device = f"/job:worker/task:{FLAGS.task_index}"
    with tf.device(tf.train.replica_device_setter(worker_device=worker_device, cluster=cluster)):
        global_step = tf.train.get_or_create_global_step()
        x = tf.placeholder(tf.float32, [None, 784])
        y_ = tf.placeholder(tf.int64, [None])
        w = tf.Variable(tf.zeros([784, 10]))
        b = tf.Variable(tf.zeros([10]))
        logits = tf.matmul(x, w) + b
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y_, logits=logits)
        )
        optimizer = tf.train.GradientDescentOptimizer(FLAGS.learning_rate)
        train_op = optimizer.minimize(loss, global_step=global_step)
        correct = tf.equal(tf.argmax(logits, 1), y_)
        accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))

    # Talk to the ps tasks and this worker only: a worker must not wait for, or hang on, the
    # other workers (the chief may be done and gone before the others finish).
    config = tf.ConfigProto(device_filters=["/job:ps", worker_device])
    if not is_chief:
        # The chief initializes the variables; poll for that every half second (the monitored
        # session would check only every 30 s).
        ready = tf.train.SessionManager(
            ready_op=tf.report_uninitialized_variables(), recovery_wait_secs=0.5
        )
        ready.wait_for_session(server.target, config=config).close()

    test_feed = {x: mnist.test.images, y_: mnist.test.labels}
    final_accuracy = tf.train.FinalOpsHook(accuracy, final_ops_feed_dict=test_feed)
    hooks = [tf.train.StopAtStepHook(last_step=FLAGS.train_steps)]
    local_steps = 0
    with tf.train.MonitoredTrainingSession(
        master=server.target,
        is_chief=is_chief,
        hooks=hooks,
        chief_only_hooks=[final_accuracy],
        config=config,
        log_step_count_steps=0,
    ) as sess:
        while not sess.should_stop():
            batch_xs, batch_ys = mnist.train.next_batch(FLAGS.batch_size)
            sess.run(train_op, feed_dict={x: batch_xs, y_: batch_ys})
            local_steps += 1
    print(f"worker {FLAGS.task_index} ran {local_steps} of {FLAGS.train_steps} steps", flush=True)
    if is_chief:
        print(f"accuracy: {final_accuracy.final_ops_values:.4f}", flush=True)


if __name__ == "__main__":
    tf.app.run()
