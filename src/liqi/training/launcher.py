"""Run a training script as ``python script.py`` would, optionally as a TensorFlow 1.x script.

::

    python -m liqi.training.launcher [--tf1] script.py [script args...]

This is the process of every job task. The script runs in it (no second interpreter) through
``runpy``, as ``__main__``, with ``sys.argv`` set to ``[script, *args]`` and the script's
folder first on ``sys.path``. The exit code is the script's: ``sys.exit(n)`` passes through,
and an uncaught exception prints its traceback (without the launcher's frames) to stderr and
exits 1. A missing script or a bad launcher option exits with liqi's exit codes (4, 2).

PAI-TF passed its platform flags (``--buckets=``, ``--volumes=``, ``--checkpointDir=``,
``--tables=``, ``--outputs=``, and ``--ps_hosts`` and its kin in a cluster) whether or not the
script defines them. When absl parses the command line (``absl.app.run``, ``FLAGS(argv)``,
``tf.app.flags``), the platform flags the script does not define are ignored, as if
``--undefok`` named them. ``sys.argv`` itself is left as passed, so a script that parses it
with argparse sees exactly what PAI would have given it.

With ``--tf1`` the script runs on the installed TensorFlow 2 as on TensorFlow 1.x:

* ``tf.compat.v1.disable_v2_behavior()``: graphs, sessions, placeholders;
* ``import tensorflow as tf`` gives the names of ``tf.compat.v1`` (``tf.Session``,
  ``tf.placeholder``, ``tf.app.flags``, ``tf.gfile``, ``tf.logging``,
  ``tf.saved_model.builder``, ``tf.train.*Optimizer``, ...), while the modules under
  ``tensorflow.python`` stay the real ones;
* ``from tensorflow.examples.tutorials.mnist import input_data`` gives liqi's MNIST reader
  (:mod:`liqi.datasets.mnist_reader`). Its ``read_data_sets(dir)`` never downloads: when
  ``dir`` holds no MNIST files it reads the job's volumes (``--volumes`` or ``LIQI_VOLUMES``),
  then liqi's built-in sample, and says on stderr which data it used.

Without ``--tf1`` TensorFlow is not imported: the script runs as it is.

TensorFlow's own log lines below errors (its C++ INFO and WARNING lines, its ``tensorflow``
logger's warnings) are hidden unless ``LIQI_TF_LOG_LEVEL`` asks for them; the script's prints
and logging (``absl`` included) are not touched.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.machinery
import os
import runpy
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

from liqi.errors import BackendUnavailableError, InvalidRequestError, LiqiError, NotFoundError
from liqi.logs.tensorflow_noise import quiet_tensorflow, tf_log_level

if TYPE_CHECKING:
    from liqi.datasets.mnist_reader import Datasets

__all__ = [
    "PLATFORM_FLAGS",
    "Launch",
    "enable_tf1",
    "flag_value",
    "main",
    "mnist_read_data_sets",
    "parse_launch",
    "platform_flags_in",
    "run_script",
    "tolerate_platform_flags",
    "volume_dirs",
]

USAGE = "usage: python -m liqi.training.launcher [--tf1] SCRIPT [SCRIPT ARGS...]"

#: Flags PAI-TF passes to every script, or to every task of a cluster, defined or not.
PLATFORM_FLAGS = (
    "buckets",
    "volumes",
    "checkpointDir",
    "tables",
    "outputs",
    "ps_hosts",
    "worker_hosts",
    "job_name",
    "task_index",
)

_INPUT_DATA = "tensorflow.examples.tutorials.mnist.input_data"


@dataclass(frozen=True)
class Launch:
    """What to run: the script (an absolute path), its arguments, and whether as TF 1.x."""

    script: Path
    args: tuple[str, ...]
    tf1: bool = False


def parse_launch(argv: Sequence[str]) -> Launch:
    """The launch that ``argv`` (the launcher's arguments, without the program) asks for.

    Launcher options come before the script; everything after the script is the script's.

    Raises:
        InvalidRequestError: an unknown launcher option, or no script.
        NotFoundError: the script is not a file.
    """
    tf1 = False
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        option = argv[index]
        index += 1
        if option == "--":
            break
        if option != "--tf1":
            raise InvalidRequestError(
                f"Unknown launcher option '{option}'; the launcher takes only --tf1. {USAGE} "
                "(the script's own flags go after SCRIPT)."
            )
        tf1 = True
    if index >= len(argv):
        raise InvalidRequestError(f"No script to run. {USAGE}")
    script = Path(argv[index])
    if not script.is_file():
        raise NotFoundError(
            f"Script '{script}' is not a file (working directory '{Path.cwd()}'). "
            "Pass the path of the Python file to run."
        )
    return Launch(script=Path(os.path.abspath(script)), args=tuple(argv[index + 1 :]), tf1=tf1)


def flag_value(args: Sequence[str], name: str) -> str | None:
    """The value of flag ``name`` in ``args`` (``--name=v``, ``--name v``, one dash too), last
    one wins; None when it is absent. Arguments after ``--`` are not flags."""
    value = None
    for index, arg in enumerate(args):
        if arg == "--":
            break
        for spelling in (f"--{name}", f"-{name}"):
            if arg.startswith(spelling + "="):
                value = arg[len(spelling) + 1 :]
            elif arg == spelling and index + 1 < len(args):
                value = args[index + 1]
    return value


def platform_flags_in(args: Sequence[str]) -> list[str]:
    """The names of :data:`PLATFORM_FLAGS` that ``args`` passes, in order of appearance."""
    present: list[str] = []
    for arg in args:
        if arg == "--":
            break
        name = arg.lstrip("-").partition("=")[0]
        if arg.startswith("-") and name in PLATFORM_FLAGS and name not in present:
            present.append(name)
    return present


def volume_dirs(args: Sequence[str], env_volumes: str | None) -> tuple[Path, ...]:
    """The job's volume directories: ``--volumes`` in ``args``, then ``LIQI_VOLUMES``'s value,
    both comma-separated, without repeats."""
    dirs: list[Path] = []
    for value in (flag_value(args, "volumes"), env_volumes):
        for part in (value or "").split(","):
            if part.strip() and Path(part.strip()) not in dirs:
                dirs.append(Path(part.strip()))
    return tuple(dirs)


def mnist_read_data_sets(volumes: Sequence[Path]) -> Callable[..., Datasets]:
    """TF1's ``input_data.read_data_sets``, served by liqi's reader, never downloading.

    On a directory without the MNIST files, the function returned reads instead, in order:
    the volume whose partitions ``volumes`` are (``.../mnist`` for ``.../mnist/train`` and
    ``.../mnist/test``), each of ``volumes`` itself, then liqi's built-in sample; it prints
    one line to stderr saying which. Other errors (a corrupt file, a bad argument) are raised.
    """
    from liqi.datasets import mnist_reader

    candidates: list[Path] = []
    for volume in volumes:
        if volume.name in ("train", "test") and volume.parent not in candidates:
            candidates.append(volume.parent)
    candidates += [volume for volume in volumes if volume not in candidates]

    def read_data_sets(
        train_dir: str | os.PathLike[str],
        fake_data: bool = False,
        one_hot: bool = False,
        dtype: Any = "float32",
        reshape: bool = True,
        validation_size: int = 0,
        seed: int | None = None,
        source_url: str | None = None,
    ) -> Datasets:
        """Read MNIST as TF1's ``input_data.read_data_sets`` did, from ``train_dir`` or, when it
        holds no MNIST files, from the job's volumes or liqi's built-in sample (see
        :func:`liqi.datasets.mnist_reader.read_data_sets`). ``source_url`` is ignored: nothing
        is downloaded."""
        options: dict[str, Any] = {
            "fake_data": fake_data,
            "one_hot": one_hot,
            "dtype": dtype,
            "reshape": reshape,
            "validation_size": validation_size,
            "seed": seed,
        }
        try:
            return mnist_reader.read_data_sets(train_dir, **options)
        except NotFoundError as missing:
            for directory in candidates:
                with contextlib.suppress(NotFoundError):
                    data = mnist_reader.read_data_sets(directory, **options)
                    _say(
                        f"liqi: no MNIST files in '{os.fspath(train_dir)}'; read_data_sets read "
                        f"them from the volume '{directory}' instead (it never downloads)."
                    )
                    return data
            builtin = mnist_reader.builtin_dir()
            try:
                data = mnist_reader.read_data_sets(builtin, **options)
            except NotFoundError:
                raise missing from None
            volumes_note = (
                " nor in the volumes " + ", ".join(f"'{volume}'" for volume in volumes)
                if volumes
                else ""
            )
            training = data.train.num_examples + data.validation.num_examples
            _say(
                f"liqi: no MNIST files in '{os.fspath(train_dir)}'{volumes_note}; read_data_sets "
                f"read liqi's built-in sample ({training:,} training, "
                f"{data.test.num_examples:,} test images) from '{builtin}' instead "
                "(it never downloads)."
            )
            return data

    return read_data_sets


def tolerate_platform_flags(names: Sequence[str]) -> bool:
    """Make absl ignore the flags ``names`` wherever the script does not define them.

    Every absl parse (``FlagValues.__call__``: ``absl.app.run``, ``FLAGS(argv)``,
    ``tf.app.flags``) gets ``--undefok=<names>`` right after the program name, so it holds
    for flags before a positional argument or ``--`` too. ``sys.argv`` is not changed.
    Returns whether absl was patched (False without ``names`` or without absl).
    """
    if not names:
        return False
    try:
        absl_flags: Any = importlib.import_module("absl.flags")
    except ImportError:
        return False
    flag_values: Any = absl_flags.FlagValues
    parse: Callable[..., Any] = flag_values.__call__
    undefok = "--undefok=" + ",".join(names)

    @functools.wraps(parse)
    def parse_tolerating(self: Any, argv: Sequence[str], known_only: bool = False) -> Any:
        if isinstance(argv, (str, bytes)) or not argv:
            return parse(self, argv, known_only)  # absl's own error for a bad argv
        return parse(self, [argv[0], undefok, *argv[1:]], known_only)

    flag_values.__call__ = parse_tolerating
    return True


def enable_tf1(read_data_sets: Callable[..., Datasets]) -> ModuleType:
    """Import TensorFlow, disable its v2 behaviour, and make ``import tensorflow`` give the
    TF1 API and ``tensorflow.examples.tutorials.mnist.input_data`` (with ``read_data_sets``).

    Returns the module that ``import tensorflow`` now gives.

    Raises:
        BackendUnavailableError: TensorFlow is not installed.
    """
    try:
        tensorflow: Any = importlib.import_module("tensorflow")
    except ImportError as error:
        raise BackendUnavailableError(
            f"--tf1 runs the script on TensorFlow, which cannot be imported here ({error}). "
            "Install it with: pip install 'liqi[tf]'."
        ) from error
    with _deprecations_silenced():
        # Its warnings name internals (disable_resource_variables) the script never called.
        tensorflow.compat.v1.disable_v2_behavior()
    alias = _tf1_module(tensorflow)
    sys.modules["tensorflow"] = alias
    _install_input_data(alias, read_data_sets)
    return alias


def run_script(launch: Launch) -> int:
    """Run ``launch.script`` here as ``__main__``; its exit code (SystemExit passes through)."""
    script = str(launch.script)
    sys.argv = [script, *launch.args]
    folder = os.path.dirname(os.path.realpath(script))
    if sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path[0] = folder  # what `python -m` put there; `python script.py` puts the folder
    else:
        sys.path.insert(0, folder)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        raise
    except Exception as error:
        sys.stdout.flush()
        _print_traceback(error)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The launcher's command line: ``[--tf1] SCRIPT [ARGS...]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        _say(
            f"{USAGE}\nRun SCRIPT as `python SCRIPT ARGS...` would. --tf1: as a TensorFlow 1.x "
            "script (tf.compat.v1, v2 behaviour off, tensorflow.examples.tutorials.mnist "
            "served by liqi).",
            sys.stdout,
        )
        return 0
    try:
        # TensorFlow's own noise only: the script's prints and logging (absl's too) stay.
        quiet_tensorflow(os.environ, tf_log_level(os.environ), loggers=("tensorflow",))
        launch = parse_launch(args)
        if launch.tf1:
            volumes = volume_dirs(launch.args, os.environ.get("LIQI_VOLUMES"))
            enable_tf1(mnist_read_data_sets(volumes))
    except LiqiError as error:
        _say(f"liqi.training.launcher: {error.message}")
        return error.exit_code
    tolerate_platform_flags(platform_flags_in(launch.args))
    return run_script(launch)


def _tf1_module(tensorflow: Any) -> ModuleType:
    """A ``tensorflow`` module whose names are ``tf.compat.v1``'s."""
    v1 = tensorflow.compat.v1
    module = ModuleType("tensorflow", v1.__doc__)

    def lookup(name: str) -> Any:
        try:
            return getattr(v1, name)
        except AttributeError:
            raise AttributeError(
                f"module 'tensorflow' has no attribute '{name}': a --tf1 script gets "
                f"tf.compat.v1 of TensorFlow {tensorflow.__version__}, which does not have it",
                name=name,
                obj=module,
            ) from None

    def names() -> list[str]:
        return sorted(set(dir(v1)) | set(module.__dict__))

    module.__dict__.update(
        {
            "__getattr__": lookup,  # PEP 562: names not set here come from tf.compat.v1
            "__dir__": names,
            # Submodules not yet imported are looked up in the TF1 API's folders, as
            # tf.compat.v1's; the real ones (tensorflow.python...) are found in sys.modules.
            "__path__": list(v1.__path__),
            "__file__": tensorflow.__file__,
            "__spec__": tensorflow.__spec__,
            "__loader__": tensorflow.__loader__,
            "__package__": "tensorflow",
        }
    )
    return module


def _install_input_data(tensorflow: ModuleType, read_data_sets: Callable[..., Datasets]) -> None:
    """Register ``tensorflow.examples.tutorials.mnist.input_data`` and its parent packages."""
    from liqi.datasets import mnist_reader

    parent = tensorflow
    parts = _INPUT_DATA.split(".")
    for depth in range(2, len(parts) + 1):
        name = ".".join(parts[:depth])
        is_package = name != _INPUT_DATA
        module = ModuleType(name, "TensorFlow 1's MNIST tutorial data, served by liqi.")
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=is_package)
        if is_package:
            module.__path__ = []
        setattr(parent, parts[depth - 1], module)
        sys.modules[name] = module
        parent = module
    parent.__dict__.update(
        {
            "read_data_sets": read_data_sets,
            "DataSet": mnist_reader.DataSet,
            "Datasets": mnist_reader.Datasets,
        }
    )


@contextlib.contextmanager
def _deprecations_silenced() -> Iterator[None]:
    try:
        silence: Any = importlib.import_module("tensorflow.python.util.deprecation").silence
    except (ImportError, AttributeError):
        silence = contextlib.nullcontext
    with silence():
        yield


def _print_traceback(error: BaseException) -> None:
    """The traceback of ``error`` from the script's first frame (the launcher's and runpy's
    frames are not the script's business); a SyntaxError shows its file, line and caret."""
    frames = error.__traceback__
    internal = (globals(), vars(runpy))  # the frames of this module's and runpy's functions
    while frames is not None and any(frames.tb_frame.f_globals is g for g in internal):
        frames = frames.tb_next
    traceback.print_exception(type(error), error, frames, file=sys.stderr)


def _say(text: str, stream: TextIO | None = None) -> None:
    """Write ``text`` and a newline to ``stream`` (stderr by default) at once."""
    stream = sys.stderr if stream is None else stream
    stream.write(text + "\n")
    stream.flush()


if __name__ == "__main__":
    sys.exit(main())
