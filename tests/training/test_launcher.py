"""The launcher: a script run as `python script.py` would run it, as TF 1.x with --tf1.

Each launch is a real `python -m liqi.training.launcher` subprocess; the MNIST fallback is
also tested in-process through the function the `input_data` shim serves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from liqi.datasets.idx import write_idx
from liqi.datasets.mnist_reader import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    builtin_dir,
)
from liqi.errors import InvalidRequestError, NotFoundError
from liqi.training.launcher import (
    mnist_read_data_sets,
    platform_flags_in,
    volume_dirs,
)

LAUNCH_TIMEOUT_S = 90
PAI_FLAGS = [
    "--buckets=/tmp/liqi-no-such-bucket/",
    "--volumes=/v/mnist/train,/v/mnist/test",
    "--checkpointDir=/tmp/liqi-no-such-checkpoints/",
    "--tables=odps://p/tables/t",
    "--outputs=odps://p/tables/o",
]


def launch(
    cwd: Path, *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m liqi.training.launcher ARGS` in ``cwd``, without the caller's LIQI_* vars."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LIQI_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "liqi.training.launcher", *map(str, args)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT_S,
        check=False,
    )


def write_script(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip())
    return path


def write_mnist(root: Path, train: int, test: int, *, layout: str = "volume") -> Path:
    """A small MNIST folder: `train/` and `test/` partitions, or the four files side by side."""
    rng = np.random.default_rng(7)
    splits = {
        "train": (TRAIN_IMAGES, TRAIN_LABELS, train),
        "test": (TEST_IMAGES, TEST_LABELS, test),
    }
    for partition, (images, labels, count) in splits.items():
        folder = root / partition if layout == "volume" else root
        folder.mkdir(parents=True, exist_ok=True)
        write_idx(folder / images, rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(folder / labels, rng.integers(0, 10, count, dtype=np.uint8))
    return root


# --- running the script -------------------------------------------------------------------


SHOW_SCRIPT = """
    import json, os, sys
    print(json.dumps({
        "name": __name__,
        "file": __file__,
        "argv": sys.argv,
        "path0": sys.path[0],
        "path": sys.path,
        "cwd": os.getcwd(),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }))
"""


def test_script_runs_as_main_with_its_argv_and_its_folder_first_on_path(tmp_path: Path) -> None:
    script = write_script(tmp_path / "code" / "show.py", SHOW_SCRIPT)

    done = launch(tmp_path, "code/show.py", *PAI_FLAGS, "--lr=0.1", "positional")

    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["name"] == "__main__"
    assert seen["file"] == str(script)
    assert seen["argv"] == [str(script), *PAI_FLAGS, "--lr=0.1", "positional"]  # untouched
    assert seen["path0"] == str(script.parent)
    assert str(tmp_path) not in seen["path"]  # as `python code/show.py`: cwd is not on the path
    assert seen["cwd"] == str(tmp_path)


def test_without_tf1_tensorflow_is_not_imported(tmp_path: Path) -> None:
    write_script(tmp_path / "show.py", SHOW_SCRIPT)

    done = launch(tmp_path, "show.py", *PAI_FLAGS)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tensorflow_imported"] is False


@pytest.mark.parametrize(
    ("statement", "exit_code", "stderr_line"),
    [
        ("sys.exit(3)", 3, None),
        ("sys.exit(0)", 0, None),
        ("sys.exit('no --buckets given')", 1, "no --buckets given"),
    ],
)
def test_the_scripts_exit_code_passes_through(
    tmp_path: Path, statement: str, exit_code: int, stderr_line: str | None
) -> None:
    write_script(tmp_path / "leave.py", f"import sys\nprint('before')\n{statement}\n")

    done = launch(tmp_path, "leave.py")

    assert done.returncode == exit_code
    assert done.stdout == "before\n"
    if stderr_line is not None:
        assert done.stderr.strip() == stderr_line
    assert "Traceback" not in done.stderr


def test_an_exception_prints_the_scripts_traceback_and_exits_1(tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "fails.py",
        """
        def train(steps):
            raise ValueError(f"steps must be positive, not {steps}")

        print("started", flush=True)
        train(-1)
        """,
    )

    done = launch(tmp_path, "fails.py")

    assert done.returncode == 1
    assert done.stdout == "started\n"
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert f'File "{script}", line 5, in <module>' in done.stderr
    assert f'File "{script}", line 2, in train' in done.stderr
    assert lines[-1] == "ValueError: steps must be positive, not -1"
    assert "runpy" not in done.stderr
    assert "launcher.py" not in done.stderr


def test_a_syntax_error_prints_where_and_exits_1(tmp_path: Path) -> None:
    script = write_script(tmp_path / "broken.py", "import os\nx = (1,\nprint(x)\n")

    done = launch(tmp_path, "broken.py")

    assert done.returncode == 1
    assert done.stdout == ""
    assert f'File "{script}", line 2' in done.stderr
    assert "SyntaxError: '(' was never closed" in done.stderr
    assert "runpy" not in done.stderr


def test_a_missing_script_is_refused_with_exit_4(tmp_path: Path) -> None:
    done = launch(tmp_path, "--tf1", "nowhere.py", "--buckets=/b/")

    assert done.returncode == NotFoundError.exit_code == 4
    assert "Script 'nowhere.py' is not a file" in done.stderr
    assert str(tmp_path) in done.stderr
    assert "Traceback" not in done.stderr
    assert "tensorflow" not in done.stderr.lower()  # refused before TensorFlow was imported


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "No script to run. usage: python -m liqi.training.launcher [--tf1] SCRIPT"),
        (["--tf2", "x.py"], "Unknown launcher option '--tf2'; the launcher takes only --tf1."),
    ],
)
def test_bad_launcher_arguments_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    done = launch(tmp_path, *args)

    assert done.returncode == InvalidRequestError.exit_code == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_options_after_the_script_are_the_scripts(tmp_path: Path) -> None:
    script = write_script(tmp_path / "show.py", SHOW_SCRIPT)

    done = launch(tmp_path, "--", "show.py", "--tf1", "-h")

    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["argv"] == [str(script), "--tf1", "-h"]
    assert seen["tensorflow_imported"] is False


# --- platform flags the script does not define ----------------------------------------------


ABSL_SCRIPT = """
    import sys
    from absl import app, flags

    flags.DEFINE_float("learning_rate", 0.5, "Step size.")
    FLAGS = flags.FLAGS

    def main(argv):
        print(f"learning_rate={FLAGS.learning_rate} argv={argv[1:]}")

    app.run(main)
"""


def test_absl_ignores_platform_flags_the_script_does_not_define(tmp_path: Path) -> None:
    import absl  # noqa: F401 - installed with TensorFlow (the tf extra)

    write_script(tmp_path / "absl_app.py", ABSL_SCRIPT)

    done = launch(tmp_path, "absl_app.py", *PAI_FLAGS, "--learning_rate=0.1", "data.csv")

    assert done.returncode == 0, done.stderr
    assert done.stdout == "learning_rate=0.1 argv=['data.csv']\n"


def test_absl_still_refuses_other_unknown_flags(tmp_path: Path) -> None:
    import absl  # noqa: F401 - installed with TensorFlow (the tf extra)

    write_script(tmp_path / "absl_app.py", ABSL_SCRIPT)

    done = launch(tmp_path, "absl_app.py", *PAI_FLAGS, "--learning_rat=0.1")

    assert done.returncode == 1
    assert "Unknown command line flag 'learning_rat'" in done.stderr
    assert done.stdout == ""


def test_platform_flags_in_finds_the_names_before_a_double_dash() -> None:
    args = ["--volumes", "/a", "-buckets=/b/", "--lr=1", "--checkpointDir=/c", "--", "--tables=t"]

    assert platform_flags_in(args) == ["volumes", "buckets", "checkpointDir"]


def test_volume_dirs_come_from_the_flag_then_the_environment() -> None:
    args = ["--volumes=/v/mnist/train,/v/mnist/test/", "--buckets=/b/"]

    dirs = volume_dirs(args, "/v/mnist/test,/w/other")

    assert dirs == (Path("/v/mnist/train"), Path("/v/mnist/test"), Path("/w/other"))
    assert volume_dirs(["--volumes", "/x"], None) == (Path("/x"),)
    assert volume_dirs([], "") == ()


# --- the MNIST fallback of input_data.read_data_sets ----------------------------------------


def test_read_data_sets_reads_a_folder_with_mnist_and_says_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    own = write_mnist(tmp_path / "MNIST_data", 12, 6, layout="tf1")
    volume = write_mnist(tmp_path / "volumes" / "mnist", 30, 10)
    read = mnist_read_data_sets([volume / "train", volume / "test"])

    data = read(own, one_hot=True)

    assert (data.train.num_examples, data.test.num_examples) == (12, 6)
    assert data.train.labels.shape == (12, 10)
    assert capsys.readouterr().err == ""


def test_read_data_sets_falls_back_to_the_volume_of_the_partitions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    volume = write_mnist(tmp_path / "volumes" / "algo_platform" / "mnist", 30, 10)
    read = mnist_read_data_sets([volume / "train", volume / "test"])

    data = read(tmp_path / "MNIST_data", validation_size=5)

    assert (data.train.num_examples, data.validation.num_examples) == (25, 5)
    assert data.test.num_examples == 10
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"no MNIST files in '{tmp_path / 'MNIST_data'}'" in err
    assert f"from the volume '{volume}'" in err


def test_read_data_sets_tries_each_volume_then_the_builtin_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty" / "train"
    empty.mkdir(parents=True)
    flat = write_mnist(tmp_path / "flat", 20, 8, layout="tf1")  # the four files, TF1's layout
    read = mnist_read_data_sets([empty, flat])

    assert read("MNIST_data").train.num_examples == 20
    assert f"from the volume '{flat}'" in capsys.readouterr().err

    builtin = mnist_read_data_sets([empty])("MNIST_data")

    assert (builtin.train.num_examples, builtin.test.num_examples) == (4000, 1000)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"nor in the volumes '{empty}'" in err
    assert f"liqi's built-in sample (4,000 training, 1,000 test images) from '{builtin_dir()}'" in (
        err
    )


def test_read_data_sets_without_volumes_reads_the_builtin_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = mnist_read_data_sets([])(tmp_path / "nothing", source_url="https://example.invalid/")

    assert data.test.num_examples == 1000
    assert "nor in the volumes" not in capsys.readouterr().err


def test_read_data_sets_does_not_hide_a_corrupt_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    own = write_mnist(tmp_path / "MNIST_data", 12, 6, layout="tf1")
    (own / TRAIN_IMAGES).write_bytes(b"not an idx file")

    with pytest.raises(InvalidRequestError):
        mnist_read_data_sets([])(own)
    assert capsys.readouterr().err == ""


# --- --tf1: TensorFlow 1.x scripts on TensorFlow 2 ------------------------------------------


V1_API_SCRIPT = """
    import importlib.util, json, sys
    import tensorflow as tf
    import tensorflow.compat.v1 as tf_v1
    from tensorflow.python.framework import ops
    import tensorflow.python.framework.ops as ops_module

    names = [
        "compat.v1", "app.flags", "app.run", "gfile.GFile", "gfile.Exists", "gfile.MakeDirs",
        "saved_model.builder.SavedModelBuilder",
        "saved_model.signature_def_utils.build_signature_def",
        "saved_model.signature_def_utils.predict_signature_def",
        "saved_model.utils.build_tensor_info", "saved_model.tag_constants.SERVING",
        "saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY",
        "saved_model.signature_constants.PREDICT_METHOD_NAME", "logging.info",
        "logging.set_verbosity", "train.GradientDescentOptimizer", "train.AdamOptimizer",
        "train.MomentumOptimizer", "Session", "placeholder", "global_variables_initializer",
    ]
    missing = []
    for name in names:
        value = tf
        try:
            for part in name.split("."):
                value = getattr(value, part)
        except AttributeError:
            missing.append(name)

    x = tf.placeholder(tf.float32, [None, 2])
    w = tf.Variable([[1.0], [2.0]])
    y = tf.matmul(x, w)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        product = sess.run(y, feed_dict={x: [[3.0, 4.0]]}).tolist()

    try:
        tf.contrib
        contrib_error = None
    except AttributeError as error:
        contrib_error = str(error)

    print(json.dumps({
        "missing": missing,
        "eager": tf.executing_eagerly(),
        "product": product,
        "compat_v1_is_v1_api": tf_v1.placeholder is tf.placeholder,
        "ops": ops.__name__ == ops_module.__name__ == "tensorflow.python.framework.ops",
        "spec": importlib.util.find_spec("tensorflow").name,
        "version": tf.__version__,
        "contrib_error": contrib_error,
    }))
"""


@pytest.mark.tf
def test_tf1_import_tensorflow_gives_the_v1_api(tmp_path: Path) -> None:
    write_script(tmp_path / "v1_api.py", V1_API_SCRIPT)

    done = launch(tmp_path, "--tf1", "v1_api.py")

    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["missing"] == []
    assert seen["eager"] is False
    assert seen["product"] == [[11.0]]
    assert seen["compat_v1_is_v1_api"] is True
    assert seen["ops"] is True
    assert seen["spec"] == "tensorflow"
    assert seen["version"].startswith("2.")
    assert "module 'tensorflow' has no attribute 'contrib'" in seen["contrib_error"]
    assert "disable_resource_variables" not in done.stderr  # the launcher's call is silent


INPUT_DATA_SCRIPT = """
    import json
    from tensorflow.examples.tutorials.mnist import input_data
    import tensorflow.examples.tutorials.mnist.input_data as input_data_module
    from liqi.datasets.mnist_reader import DataSet

    mnist = input_data.read_data_sets("MNIST_data/", one_hot=True)
    print(json.dumps({
        "same_module": input_data is input_data_module,
        "train": mnist.train.images.shape,
        "test": mnist.test.labels.shape,
        "liqi_dataset": isinstance(mnist.train, DataSet),
    }))
"""


@pytest.mark.tf
def test_tf1_input_data_is_liqis_reader_reading_the_volumes(tmp_path: Path) -> None:
    write_script(tmp_path / "read.py", INPUT_DATA_SCRIPT)
    empty = tmp_path / "volumes" / "empty" / "train"
    empty.mkdir(parents=True)
    volume = write_mnist(tmp_path / "volumes" / "algo_platform" / "mnist", 30, 10)
    env = {"LIQI_VOLUMES": f"{volume / 'train'},{volume / 'test'}"}

    # --volumes holds no MNIST, LIQI_VOLUMES does: both are tried, the flag first.
    done = launch(tmp_path, "--tf1", "read.py", f"--volumes={empty}", env=env)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "same_module": True,
        "train": [30, 784],
        "test": [10, 10],
        "liqi_dataset": True,
    }
    fallback = [line for line in done.stderr.splitlines() if line.startswith("liqi:")]
    assert fallback == [
        f"liqi: no MNIST files in 'MNIST_data/'; read_data_sets read them from the volume "
        f"'{volume}' instead (it never downloads)."
    ]
    assert not (tmp_path / "MNIST_data").exists()  # nothing downloaded or created


TF_APP_SCRIPT = """
    import tensorflow as tf

    tf.app.flags.DEFINE_integer("steps", 10, "Training steps.")
    FLAGS = tf.app.flags.FLAGS

    def main(argv):
        print("steps=%d" % FLAGS.steps)

    if __name__ == "__main__":
        tf.app.run()
"""


@pytest.mark.tf
def test_tf1_app_flags_script_defining_no_platform_flag_runs(tmp_path: Path) -> None:
    write_script(tmp_path / "tf_app.py", TF_APP_SCRIPT)

    done = launch(tmp_path, "--tf1", "tf_app.py", *PAI_FLAGS, "--steps=3")

    assert done.returncode == 0, done.stderr
    assert done.stdout == "steps=3\n"


@pytest.mark.tf
def test_tf1_absl_script_defining_no_platform_flag_runs(tmp_path: Path) -> None:
    write_script(
        tmp_path / "absl_app.py", "import tensorflow as tf\n" + textwrap.dedent(ABSL_SCRIPT)
    )

    done = launch(tmp_path, "--tf1", "absl_app.py", *PAI_FLAGS, "--learning_rate=0.25")

    assert done.returncode == 0, done.stderr
    assert done.stdout == "learning_rate=0.25 argv=[]\n"
