"""TensorFlow's own logging, quiet unless asked for.

Importing TensorFlow and loading a TF1 SavedModel write lines nobody acts on: its C++ logging
at INFO and WARNING (``cpu_feature_guard``, "oneDNN custom operations are on", ``I0000 ...``)
and warnings of its Python loggers (``tensorflow``, ``absl``: "Unable to create a python object
for variable ..."). Processes that import TensorFlow (``liqi serve`` and so every service
instance, the standby server, the jobs' launcher) call :func:`quiet_tensorflow` at their entry
point, before TensorFlow is imported: only TensorFlow's errors are shown.

Two mechanisms, because TensorFlow filters its C++ logging (``TF_CPP_MIN_LOG_LEVEL``) only once
its logging is set up: the lines of ``import tensorflow`` itself come before that, in absl's
early format (``WARNING: All log messages before absl::InitializeLog() ...``, ``I0000
00:00:...``). So the first ``import tensorflow`` (in any thread) runs with file descriptor 2
passed through a filter thread that drops those lines and forwards everything else as it comes
(:class:`_QuietImport`).

``LIQI_TF_LOG_LEVEL`` (``error``, ``warning`` or ``info``) chooses the level, and ``liqi
--debug`` means ``info``. Without either, a ``TF_CPP_MIN_LOG_LEVEL`` already in the
environment is left as it is. The numbers TensorFlow computes do not change
(``TF_ENABLE_ONEDNN_OPTS`` is not touched).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from types import ModuleType

from liqi.errors import ConfigError

ENV_VAR = "LIQI_TF_LOG_LEVEL"
LEVELS = ("error", "warning", "info")
DEFAULT_LEVEL = "error"
_CPP_MIN_LEVEL = {"error": "2", "warning": "1", "info": "0"}  # TF_CPP_MIN_LOG_LEVEL
_PYTHON_LEVEL = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}
#: TensorFlow's Python loggers; the launcher leaves ``absl`` alone (scripts log through it).
TF_LOGGERS = ("tensorflow", "absl")


def tf_log_level(environ: Mapping[str, str], *, debug: bool = False) -> str | None:
    """The level asked for: ``info`` with ``debug``, else ``LIQI_TF_LOG_LEVEL``'s, else None
    (the default: errors only).

    Raises:
        ConfigError: ``LIQI_TF_LOG_LEVEL`` is not one of :data:`LEVELS`.
    """
    if debug:
        return "info"
    text = environ.get(ENV_VAR, "").strip().lower()
    if not text:
        return None
    if text not in LEVELS:
        raise ConfigError(
            f"{ENV_VAR}={environ[ENV_VAR]!r} is not a level: use one of {', '.join(LEVELS)}."
        )
    return text


def quiet_tensorflow(
    environ: MutableMapping[str, str],
    level: str | None,
    *,
    loggers: Sequence[str] = TF_LOGGERS,
) -> None:
    """Show TensorFlow's logging from ``level`` up (None: errors, keeping a
    ``TF_CPP_MIN_LOG_LEVEL`` already set). ``environ`` is the process's environment
    (``os.environ``), before TensorFlow is imported; child processes inherit it."""
    chosen = level or DEFAULT_LEVEL
    if level is None:
        if not environ.get("TF_CPP_MIN_LOG_LEVEL"):  # empty counts as unset
            environ["TF_CPP_MIN_LOG_LEVEL"] = _CPP_MIN_LEVEL[chosen]
    else:
        environ["TF_CPP_MIN_LOG_LEVEL"] = _CPP_MIN_LEVEL[chosen]
    for name in loggers:
        # TensorFlow keeps the level of its logger when it is imported later.
        logging.getLogger(name).setLevel(_PYTHON_LEVEL[chosen])
    hidden = _EARLY_HIDDEN.get(chosen)
    if hidden and "tensorflow" not in sys.modules:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietImport)]
        sys.meta_path.insert(0, _QuietImport(hidden))


#: The severities of absl's early C++ lines that each level hides.
_EARLY_HIDDEN = {"error": "IW", "warning": "I"}
_ABSL_NOTICE = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
)


def is_early_noise(line: bytes, severities: str) -> bool:
    """Whether ``line`` (without its line break) is an early absl C++ line of one of
    ``severities`` (``I``, ``W``), or absl's notice that such lines go to stderr."""
    if line == _ABSL_NOTICE:
        return True
    match = _EARLY_LINE.match(line)
    return match is not None and match.group(1).decode() in severities


_EARLY_LINE = re.compile(rb"^([IWEF])0000 00:00:\d+\.\d+\s+\d+ [\w.-]+:\d+\] ")


class _QuietImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs the first ``import tensorflow`` with fd 2 through :class:`_StderrFilter`."""

    def __init__(self, severities: str) -> None:
        self._severities = severities
        self._loader: importlib.abc.Loader | None = None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and spec.loader is not self:
                    self._loader, spec.loader = spec.loader, self
                return spec
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        assert self._loader is not None
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        assert self._loader is not None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # once: later imports find the module in sys.modules
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with _StderrFilter(self._severities):
            self._loader.exec_module(module)


class _StderrFilter:
    """While entered, what is written to fd 2 goes through a thread that drops early absl
    lines and forwards the rest to the real fd 2 line by line, as it comes."""

    def __init__(self, severities: str) -> None:
        self._severities = severities
        self._saved = -1
        self._thread: threading.Thread | None = None

    def __enter__(self) -> None:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            sys.stderr.flush()
        try:
            self._saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to filter
            return
        read_end, write_end = os.pipe()
        out = os.dup(self._saved)  # the thread's own: it may outlive __exit__
        os.dup2(write_end, 2)
        os.close(write_end)
        self._thread = threading.Thread(
            target=self._forward, args=(read_end, out), name="tensorflow-import-stderr", daemon=True
        )
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        if self._saved < 0:
            return
        with contextlib.suppress(AttributeError, OSError, ValueError):
            sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes our end of the pipe: the thread sees its end
        os.close(self._saved)
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _forward(self, read_end: int, out: int) -> None:
        pending = b""
        try:
            while chunk := os.read(read_end, 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                kept = [
                    line + b"\n" for line in lines if not is_early_noise(line, self._severities)
                ]
                _write_all(out, b"".join(kept))
            if pending and not is_early_noise(pending, self._severities):
                _write_all(out, pending)
        except OSError:
            pass
        finally:
            os.close(read_end)
            os.close(out)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
