"""Stand-in for EAS's ``allspark`` package, so EAS Python processors run unchanged.

An EAS processor script looks like this::

    import allspark

    class MyProcessor(allspark.BaseProcessor):
        def initialize(self):
            self.model = load(self.get_model_path().decode())

        def process(self, data):          # data: the request body (bytes)
            return b"answer", 200         # (body, status); 0 also means 200

    if __name__ == "__main__":
        allspark.default_properties().put("rpc.keepalive", "10000")
        MyProcessor(worker_threads=10).run()

``liqi serve --processor python`` imports such a script with ``allspark`` pointing here (unless
the real package is installed) and never runs its ``__main__`` block; ``python app.py`` runs it
and :meth:`BaseProcessor.run` serves it over HTTP on ``/api/predict/<script name>``.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["BaseProcessor", "Properties", "default_properties"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class Properties:
    """String settings such as ``rpc.keepalive``; kept for scripts that set them."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._lock = threading.Lock()

    def put(self, key: str, value: object) -> None:
        with self._lock:
            self._values[str(key)] = str(value)

    def get(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            return self._values.get(str(key), default)


_PROPERTIES = Properties()


def default_properties() -> Properties:
    """The process-wide :class:`Properties` (EAS's ``allspark.default_properties()``)."""
    return _PROPERTIES


class BaseProcessor:
    """Base class of EAS Python processors: override ``initialize`` and ``process``.

    ``pre_process`` and ``post_process`` are helpers the processor calls itself from
    ``process`` (as in EAS's template); by default they return their argument.
    """

    model_path: str | None = None

    def __init__(
        self,
        worker_threads: int = 5,
        worker_processes: int = 1,
        endpoint: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.worker_threads = worker_threads
        self.worker_processes = worker_processes
        self.endpoint = endpoint
        self.options = dict(kwargs)  # io_threads and other EAS knobs liqi does not use

    def initialize(self) -> None:
        """Called once before the first request: load the model here."""

    def pre_process(self, data: Any) -> Any:
        return data

    def process(self, data: bytes) -> tuple[bytes, int]:
        """Answer one request: the response body and an HTTP status (0 means 200)."""
        raise NotImplementedError(f"{type(self).__name__} must override process(data).")

    def post_process(self, data: Any) -> Any:
        return data

    def get_model_path(self) -> bytes:
        """The model folder, as bytes (EAS's API; call ``.decode()`` on it)."""
        return (self.model_path or "").encode()

    def run(self) -> None:
        """Serve this processor over HTTP until interrupted (``python app.py``)."""
        from liqi.serving.server import run_processor  # the server pulls in uvicorn

        host, port = parse_endpoint(self.endpoint)
        run_processor(self, name=_script_name(), host=host, port=port)


def parse_endpoint(endpoint: str | None) -> tuple[str, int]:
    """``"0.0.0.0:9000"``, ``":9000"`` or ``"9000"`` -> (host, port); defaults 127.0.0.1:8080."""
    if not endpoint:
        return DEFAULT_HOST, DEFAULT_PORT
    host, _, port = endpoint.strip().rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(
            f"Cannot read the endpoint {endpoint!r}: give host:port or a port, e.g. "
            f"'127.0.0.1:{DEFAULT_PORT}'."
        ) from None
    return host or DEFAULT_HOST, number


def _script_name() -> str:
    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    return Path(file).stem if file else "processor"
