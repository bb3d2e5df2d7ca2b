"""Run a model server: options in, uvicorn on a SO_REUSEPORT socket out.

:func:`build_app` wires a source, a loader choice, the manager and the ASGI app;
:func:`serve` runs it until SIGTERM/SIGINT, after which uvicorn stops accepting, finishes the
requests in flight (up to ``drain_timeout_s``) and the manager unloads every version.
With ``state_file``, it reports how it is doing there (see :mod:`liqi.serving.state_file`);
with ``exit_on_load_failure``, a failed first load or warm-up ends :func:`serve` with a
:class:`ModelLoadError` instead of serving not-ready.
Several ``liqi serve`` processes may share one port where the OS has SO_REUSEPORT (Linux):
the kernel spreads connections across them.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from liqi._logging import configure_logging
from liqi.asgi.cors import CorsPolicy
from liqi.asgi.header_timeout import DEFAULT_HEADER_TIMEOUT_S, header_timeout_protocol
from liqi.asgi.listen import bind_socket, url_of
from liqi.errors import LiqiError, ModelLoadError
from liqi.serving.app import ServeLimits, ServingApp
from liqi.serving.custom import PythonProcessorServable
from liqi.serving.loaders import Loader, RawServable, Servable
from liqi.serving.manager import ModelManager, ModelOptions, ServedModel
from liqi.serving.metrics import ServingMetrics
from liqi.serving.processors import detect, make_loader, normalize
from liqi.serving.source import LocalSource, ModelSource, open_source
from liqi.serving.state_file import ServerState, write_state
from liqi.serving.warmup import WarmupRequests

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessorOptions:
    """Which loader serves the model: ``name`` None means detect it from the files."""

    name: str | None = None
    path: str | None = None  # custom processors: the folder (or .py file) with the code
    entry: str | None = None  # custom processors: "app.py" or "app.py:MyProcessor"
    worker_threads: int | None = None


@dataclass(frozen=True)
class ServeOptions:
    uri: str
    cache_dir: Path
    name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    processor: ProcessorOptions = field(default_factory=ProcessorOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    poll_interval_s: float = 5.0
    token: str | None = None
    cors: CorsPolicy | None = None  # origins allowed to call from a browser
    limits: ServeLimits = field(default_factory=ServeLimits)
    drain_timeout_s: float = 30.0
    reuse_port: bool = True
    warmup_file: Path | None = None  # requests replayed before the server counts as ready
    exit_on_load_failure: bool = False
    state_file: Path | None = None
    instance_id: str | None = None  # a service instance's id: a marker in argv and logs


def loader_choice(processor: ProcessorOptions) -> Callable[[Path], Loader]:
    """A function giving the loader for a fetched version: fixed, or detected per version."""
    if processor.name is not None:
        fixed = make_loader(
            normalize(processor.name),
            processor_path=processor.path,
            processor_entry=processor.entry,
            worker_threads=processor.worker_threads,
        )
        return lambda path: fixed
    return lambda path: make_loader(detect(path))


def prefetch_imports(source: ModelSource, processor: ProcessorOptions) -> None:
    """Start importing TensorFlow on a thread when the model needs it (the processor says so,
    or a local model's files do): the import (seconds) then overlaps the rest of start-up,
    such as a download from a bucket, instead of following it."""
    try:
        if processor.name:
            kind = normalize(processor.name)
        elif isinstance(source, LocalSource):
            kind = detect(source.fetch(max(source.versions())))
        else:
            return
    except (LiqiError, ValueError):
        return  # the manager reports it properly
    if kind == "tensorflow" and importlib.util.find_spec("tensorflow") is not None:
        threading.Thread(target=importlib.import_module, args=("tensorflow",), daemon=True).start()


def build_app(
    options: ServeOptions,
    *,
    source: ModelSource | None = None,
    loader_for: Callable[[Path], Loader] | None = None,
    on_ready: Callable[[], None] | None = None,
    on_failed: Callable[[str], None] | None = None,
) -> ServingApp:
    """The app for ``options``. Raises a LiqiError when the warm-up file cannot be read."""
    warmup = WarmupRequests.read(options.warmup_file) if options.warmup_file else None
    source = source or open_source(options.uri, cache_dir=options.cache_dir)
    metrics = ServingMetrics()
    model = ServedModel(
        options.name or source.name,
        source,
        loader_for or loader_choice(options.processor),
        options.model,
        observe_batch=metrics.batch_observer,
    )
    manager = ModelManager([model], poll_interval_s=options.poll_interval_s)
    return ServingApp(
        manager,
        token=options.token,
        limits=options.limits,
        metrics=metrics,
        on_ready=on_ready,
        on_failed=on_failed,
        warmup=warmup,
        cors=options.cors,
    )


def bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A listening socket, inherited by worker processes; SO_REUSEPORT lets several servers
    share the port."""
    return bind_socket(host, port, reuse_port=reuse_port, inheritable=True)


class _Server(uvicorn.Server):
    """uvicorn, minus re-raising SIGTERM after a clean drain: the process exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


# An idle keep-alive connection is closed after this long (uvicorn's timeout_keep_alive).
KEEP_ALIVE_S = 5


def uvicorn_server(
    app: ServingApp,
    *,
    drain_timeout_s: float = 30.0,
    log_level: str = "info",
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
) -> uvicorn.Server:
    """uvicorn with uvloop and httptools, no access log (ours is at debug level)."""
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=header_timeout_protocol(header_timeout_s),
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        log_config=None,
        log_level=log_level,
        timeout_graceful_shutdown=int(max(1, drain_timeout_s)),
        timeout_keep_alive=KEEP_ALIVE_S,
        backlog=2048,
    )
    return _Server(config)


SWITCH_INTERVAL_S = 0.0005


def run_app(server: uvicorn.Server, sock: socket.socket) -> None:
    # The event loop and the model's worker threads share the GIL. Python's default switch
    # interval (5 ms) lets a busy loop keep a finished batch waiting for up to 5 ms; 0.5 ms
    # hands the GIL over promptly (measured: higher throughput and a much lower p99).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def ready_text(app: ServingApp, url: str, seconds: float) -> str:
    """The lines printed once the server is ready: what serves where."""
    lines = []
    for model in app.manager.models.values():
        available = model.available()
        if available and isinstance(available[-1].servable, RawServable):
            # A custom processor takes raw bodies on the EAS route only.
            lines.append(f"Serving processor {model.name} at {url}/api/predict/{model.name}")
            continue
        versions = ", ".join(str(v.version) for v in available)
        lines += [
            f"Serving {model.name} version {versions} at {url} (ready in {seconds:.2f}s)",
            f"  EAS         POST {url}/api/predict/{model.name}",
            f"  TF Serving  POST {url}/v1/models/{model.name}:predict",
            f"  V2          POST {url}/v2/models/{model.name}/infer",
        ]
    return "\n".join(lines)


def serve(
    options: ServeOptions,
    *,
    source: ModelSource | None = None,
    loader_for: Callable[[Path], Loader] | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve until SIGTERM/SIGINT; ``announce`` gets :func:`ready_text` once every model
    has a version that answered its warm-up call (and the warm-up file's requests).

    Raises:
        ModelLoadError: with ``exit_on_load_failure``, the first load or the warm-up failed
            (the server stopped).
    """
    started = time.monotonic()
    source = source or open_source(options.uri, cache_dir=options.cache_dir)
    url = ""
    failures: list[str] = []

    def ready() -> None:
        announce(ready_text(app, url, time.monotonic() - started))
        write_state(options.state_file, ServerState(os.getpid(), "ready", url))

    def failed(reason: str) -> None:
        failures.append(reason)
        server.should_exit = True

    on_failed = failed if options.exit_on_load_failure else None
    app = build_app(
        options, source=source, loader_for=loader_for, on_ready=ready, on_failed=on_failed
    )
    server = uvicorn_server(app, drain_timeout_s=options.drain_timeout_s)
    prefetch_imports(source, options.processor)
    sock = bind(options.host, options.port, reuse_port=options.reuse_port)
    url = url_of(sock)
    write_state(options.state_file, ServerState(os.getpid(), "listening", url))
    instance = f" instance_id={options.instance_id}" if options.instance_id else ""
    log.info("listening on %s; loading %s%s", url, options.uri, instance)
    run_app(server, sock)
    if failures:
        raise ModelLoadError(failures[0])
    write_state(options.state_file, ServerState(os.getpid(), "stopped", url, exit_code=0))


class _InstanceSource(ModelSource):
    """One version, in this process: the processor object ``run()`` was called on."""

    def __init__(self, name: str) -> None:
        self.uri = f"(in-process processor {name})"
        self.name = name

    def versions(self) -> dict[int, str]:
        return {1: self.uri}

    def fetch(self, version: int) -> Path:
        return Path.cwd()


class _InstanceLoader(Loader):
    def __init__(self, processor: object) -> None:
        self._processor = processor

    def load(self, path: Path, *, name: str, version: int) -> Servable:
        started = time.monotonic()
        initialize = getattr(self._processor, "initialize", None)
        try:
            if callable(initialize):
                initialize()
        except Exception as exc:
            raise ModelLoadError(
                f"Processor {name!r} failed in initialize(): {type(exc).__name__}: {exc}"
            ) from exc
        threads = getattr(self._processor, "worker_threads", 5)
        return PythonProcessorServable(
            name,
            version,
            self._processor,
            time.monotonic() - started,
            worker_threads=threads if isinstance(threads, int) and threads > 0 else 5,
        )


def run_processor(processor: object, *, name: str, host: str, port: int) -> None:
    """Serve an allspark-style processor object (``MyProcessor().run()``) on
    ``/api/predict/<name>`` until SIGTERM/SIGINT."""
    configure_logging(logging.INFO)
    loader = _InstanceLoader(processor)
    options = ServeOptions(
        uri=name, cache_dir=Path.cwd(), name=name, host=host, port=port, poll_interval_s=0
    )
    serve(options, source=_InstanceSource(name), loader_for=lambda path: loader, announce=_say)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
