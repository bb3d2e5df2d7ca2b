"""Custom Python processors (EAS "allspark" style): bytes in, bytes and a status out.

The entry script is imported as a fresh module (its ``__main__`` block does not run), with its
folder on ``sys.path`` so sibling modules import, and ``allspark`` resolving to
:mod:`liqi.serving.allspark` unless the real package is installed. The processor class is the
one named after ``:`` in the entry, else the single class in the script that subclasses
``BaseProcessor`` or has both ``initialize`` and ``process``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import itertools
import logging
import numbers
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from liqi.errors import InvalidRequestError, ModelLoadError, NotFoundError
from liqi.serving import allspark
from liqi.serving.loaders import Loader, RawServable, Servable

__all__ = ["PythonProcessorLoader", "PythonProcessorServable"]

log = logging.getLogger(__name__)

DEFAULT_WORKER_THREADS = 5
_BODY_TYPES = (bytes, bytearray, str)
_EXPECTED = "a tuple (body: bytes | str, status: int), e.g. (b'ok', 200)"
_counter = itertools.count(1)


class PythonProcessorServable(RawServable):
    processor = "python"

    def __init__(
        self, name: str, version: int, instance: Any, load_time_s: float, *, worker_threads: int
    ) -> None:
        self.name = name
        self.version = version
        self.load_time_s = load_time_s
        self.instance = instance
        self.worker_threads = worker_threads
        self.signatures = {}
        self.default_signature = ""
        self._post_process = _overrides(instance, "post_process")

    def process(self, data: bytes) -> tuple[bytes, int]:
        """Run the processor on one body; never raises (failures answer 500)."""
        try:
            result = self.instance.process(data)
            if (
                isinstance(result, tuple)
                and len(result) == 2
                and not isinstance(result[0], _BODY_TYPES)
                and self._post_process
            ):
                # Some processors return a value and leave post_process to encode it.
                result = (self.instance.post_process(result[0]), result[1])
            return self._answer(result)
        except (Exception, SystemExit) as exc:
            log.exception(
                "model=%s version=%s processor %s failed on a request",
                self.name,
                self.version,
                type(self.instance).__name__,
            )
            return f"{type(exc).__name__}: {exc}".encode(), 500

    def _answer(self, result: Any) -> tuple[bytes, int]:
        """The checked ``(bytes, status)`` of a processor's result, or a 500 saying why not."""
        if not isinstance(result, tuple) or len(result) != 2:
            return self._refuse(_preview(result))
        body, status = result
        if not isinstance(body, _BODY_TYPES):
            return self._refuse(f"a body of type {type(body).__name__} ({_preview(body)})")
        if isinstance(status, bool) or not isinstance(status, numbers.Integral):
            return self._refuse(f"status {_preview(status)} of type {type(status).__name__}")
        status = 200 if status == 0 else int(status)
        if not 100 <= status <= 599:
            return self._refuse(f"status {status}", "an HTTP status in 100..599 (or 0 for 200)")
        return (body.encode("utf-8") if isinstance(body, str) else bytes(body)), status

    def _refuse(self, shown: str, expected: str = _EXPECTED) -> tuple[bytes, int]:
        owner = f"{type(self.instance).__name__}.process"
        message = f"{owner} returned {shown}; expected {expected}."
        log.error("model=%s version=%s %s", self.name, self.version, message)
        return message.encode(), 500


class PythonProcessorLoader(Loader):
    """Loads a processor script; ``processor_path`` defaults to the model version's folder.

    Args:
        processor_path: the folder with the code, or the ``.py`` file itself.
        processor_entry: ``app.py``, ``./app.py`` or ``app.py:MyProcessor``, relative to
            ``processor_path``; may be omitted when ``processor_path`` is the ``.py`` file.
        worker_threads: calls at once; default the ``worker_threads=N`` the script passes to
            its class (in its ``__main__`` block), else the instance's, else 5.
    """

    def __init__(
        self,
        processor_path: str | Path | None = None,
        processor_entry: str | None = None,
        worker_threads: int | None = None,
    ) -> None:
        self.processor_path = Path(processor_path) if processor_path is not None else None
        file_part, _, class_name = (processor_entry or "").partition(":")
        self.entry_file = file_part.strip()
        self.class_name = class_name.strip() or None
        if not self.entry_file and not (self.processor_path and self.processor_path.is_file()):
            raise InvalidRequestError(
                "A python processor needs its entry script: pass --processor-entry app.py "
                "(or app.py:MyProcessor), relative to --processor-path."
            )
        self.worker_threads = worker_threads

    def script(self, model_path: Path) -> Path:
        base = self.processor_path or model_path
        if not self.entry_file:
            return base
        folder = base.parent if base.is_file() else base
        script = folder / self.entry_file
        if not script.is_file():
            found = sorted(p.name for p in folder.glob("*.py")) if folder.is_dir() else []
            raise NotFoundError(
                f"No processor script {script}: the entry {self.entry_file!r} is not a file. "
                f"Python files in {folder}: {', '.join(found) or 'none'}."
            )
        return script

    def load(self, path: Path, *, name: str, version: int) -> Servable:
        script = self.script(path)
        started = time.monotonic()
        module = self._guarded(name, version, script, "importing", lambda: _import(script))
        cls = _processor_class(module, self.class_name, script)
        _check_no_args(cls, script)
        instance = self._guarded(name, version, script, f"creating {cls.__name__}", cls)
        if getattr(instance, "model_path", None) is None:  # the processor may set its own
            instance.model_path = str(path)
        self._guarded(name, version, script, f"{cls.__name__}.initialize()", instance.initialize)
        threads = self.worker_threads or _worker_threads(instance, script, cls.__name__)
        return PythonProcessorServable(
            name, version, instance, time.monotonic() - started, worker_threads=threads
        )

    def _guarded(self, name: str, version: int, script: Path, step: str, call: Any) -> Any:
        try:
            return call()
        except (Exception, SystemExit) as exc:
            log.exception("model=%s version=%s failed %s (%s)", name, version, step, script)
            raise ModelLoadError(
                f"Cannot load the python processor of {name!r} version {version}: {step} "
                f"({script}) raised {type(exc).__name__}: {exc}. The server log has the "
                "traceback."
            ) from None


def _import(script: Path) -> ModuleType:
    folder = str(script.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # as `python app.py` would: sibling modules import
    if "allspark" not in sys.modules and importlib.util.find_spec("allspark") is None:
        sys.modules["allspark"] = allspark
    module_name = f"liqi_processor_{next(_counter)}_{script.stem.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, script)
    if spec is None or spec.loader is None:
        raise ImportError(f"{script} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses, pickle and typing look it up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _is_candidate(cls: type) -> bool:
    bases = [allspark.BaseProcessor]
    real = sys.modules.get("allspark")
    if real is not None and isinstance(getattr(real, "BaseProcessor", None), type):
        bases.append(real.BaseProcessor)
    if any(issubclass(cls, base) and cls is not base for base in bases):
        return True
    return callable(getattr(cls, "initialize", None)) and callable(getattr(cls, "process", None))


def _processor_class(module: ModuleType, class_name: str | None, script: Path) -> type:
    defined = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and obj.__module__ == module.__name__
    ]
    if class_name is not None:
        found = getattr(module, class_name, None)
        if isinstance(found, type):
            return found
        names = ", ".join(sorted(c.__name__ for c in defined)) or "none"
        raise ModelLoadError(
            f"{script} has no class {class_name!r}. Classes defined there: {names}."
        )
    candidates = [c for c in defined if _is_candidate(c)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        names = ", ".join(sorted(c.__name__ for c in defined)) or "none"
        raise ModelLoadError(
            f"{script} defines no processor class: none subclasses allspark.BaseProcessor or "
            f"has both initialize() and process() (classes found: {names}). Define one, or "
            f"name it: --processor-entry {script.name}:ClassName."
        )
    names = ", ".join(sorted(c.__name__ for c in candidates))
    first = sorted(c.__name__ for c in candidates)[0]
    raise ModelLoadError(
        f"{script} defines several processor classes ({names}); name the one to serve: "
        f"--processor-entry {script.name}:{first}."
    )


def _check_no_args(cls: type, script: Path) -> None:
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    try:
        signature.bind()
    except TypeError:
        raise ModelLoadError(
            f"{cls.__name__}{signature} in {script} needs arguments, but liqi creates the "
            f"processor as {cls.__name__}(). Give every __init__ argument a default."
        ) from None


def _overrides(instance: Any, method: str) -> bool:
    found = getattr(type(instance), method, None)
    return callable(found) and found is not getattr(allspark.BaseProcessor, method, None)


def _worker_threads(instance: Any, script: Path, class_name: str) -> int:
    """``worker_threads=N`` from ``MyProcessor(worker_threads=N)`` in the script (its
    ``__main__`` block, which liqi does not run), else the instance's, else 5."""
    try:
        tree = ast.parse(script.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        tree = None
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.Call) and (
            (isinstance(node.func, ast.Name) and node.func.id == class_name)
            or (isinstance(node.func, ast.Attribute) and node.func.attr == class_name)
        ):
            for keyword in node.keywords:
                value = keyword.value
                if (
                    keyword.arg == "worker_threads"
                    and isinstance(value, ast.Constant)
                    and type(value.value) is int
                    and value.value > 0
                ):
                    return value.value
    threads = getattr(instance, "worker_threads", None)
    if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0:
        return threads
    return DEFAULT_WORKER_THREADS


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
