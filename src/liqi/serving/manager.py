"""The ModelManager: which versions of which models are served, and swapping them safely.

Each :class:`ServedModel` polls its :class:`~liqi.serving.source.ModelSource`, asks its
:class:`~liqi.core.version_policy.VersionPolicy` which versions to serve, and loads new ones
(fetch, load, warm up) on a thread while the old ones keep answering. A new version becomes
visible only once it answered its warm-up call; an old one stops taking requests, finishes
the ones it has (``in_flight`` reaches 0), then its runner stops and it is closed. A version
that fails to load is kept as FAILED with its reason (shown by the status routes) and retried
with backoff; the versions already serving stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from liqi.core.batching import BatchPolicy
from liqi.core.version_policy import VersionPolicy, plan
from liqi.errors import InvalidRequestError, LiqiError, ModelUnavailableError, NotFoundError
from liqi.serving.loaders import Loader, RawServable, Servable
from liqi.serving.runner import BatchObserver, BatchRunner
from liqi.serving.source import ModelSource

log = logging.getLogger(__name__)

MAX_RETRY_S = 300.0


class VersionState(enum.Enum):
    """TF Serving's version states (plus FAILED, which TF Serving reports as END + error)."""

    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"
    FAILED = "FAILED"


@dataclass(eq=False)
class LoadedVersion:
    """One version of a served model and what it is doing."""

    version: int
    state: VersionState = VersionState.LOADING
    servable: Servable | None = None
    runner: BatchRunner | None = None
    error: str = ""
    in_flight: int = 0
    failures: int = 0
    retry_at: float = 0.0
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def __enter__(self) -> LoadedVersion:
        self.in_flight += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self.state is VersionState.UNLOADING:
            self.drained.set()

    def loaded(self, model: str) -> tuple[Servable, BatchRunner]:
        """The servable and its runner (an AVAILABLE version always has both)."""
        if self.servable is None or self.runner is None:
            raise ModelUnavailableError(f"Model {model!r} version {self.version} is not loaded.")
        return self.servable, self.runner

    def tensor_model(self, model: str) -> tuple[Servable, BatchRunner]:
        """:meth:`loaded`, refusing custom processors (they take raw bodies on EAS only)."""
        servable, runner = self.loaded(model)
        if isinstance(servable, RawServable):
            raise InvalidRequestError(
                f"Model {model!r} is a custom processor: send its raw body to "
                f"POST /api/predict/{model}."
            )
        return servable, runner


@dataclass(frozen=True)
class ModelOptions:
    """How one model is served (from the CLI flags or a service spec)."""

    policy: VersionPolicy = field(default_factory=VersionPolicy)
    batching: BatchPolicy = field(default_factory=BatchPolicy)
    labels: dict[str, int] = field(default_factory=dict)
    workers: int = 1  # model calls at once (custom processors use their worker_threads)
    warmup: bool = True


LoaderFor = Callable[[Path], Loader]


class ServedModel:
    """A model name and its versions."""

    def __init__(
        self,
        name: str,
        source: ModelSource,
        loader_for: LoaderFor,
        options: ModelOptions,
        *,
        observe_batch: Callable[[str, int], BatchObserver] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.source = source
        self.options = options
        self.labels = dict(options.labels)
        self.versions: dict[int, LoadedVersion] = {}
        self._available: list[LoadedVersion] = []
        self.source_error = ""
        self.refreshed = False  # the first poll finished (every wanted version tried)
        self._loader_for = loader_for
        self._observe_batch = observe_batch
        self._clock = clock
        self._lock = asyncio.Lock()

    # -- request side (event loop, no awaits) ---------------------------------------------

    def available(self) -> list[LoadedVersion]:
        """The versions taking requests, oldest first (kept current by :meth:`_set_state`)."""
        return self._available

    def _set_state(self, entry: LoadedVersion, state: VersionState) -> None:
        entry.state = state
        self._available = sorted(
            (v for v in self.versions.values() if v.state is VersionState.AVAILABLE),
            key=lambda v: v.version,
        )

    def resolve(self, version: str | None = None, label: str | None = None) -> LoadedVersion:
        """The version a request goes to: the newest available one unless it names one."""
        available = self.available()
        if label is not None:
            number = self.labels.get(label)
            if number is None:
                known = ", ".join(sorted(self.labels)) or "none"
                raise NotFoundError(
                    f"Model {self.name!r} has no version label {label!r}. Labels: {known}."
                )
            version = str(number)
        if version is not None:
            for candidate in available:
                if str(candidate.version) == version:
                    return candidate
            served = ", ".join(str(v.version) for v in available) or "none"
            raise NotFoundError(
                f"Model {self.name!r} has no version {version} being served. "
                f"Available versions: {served}."
            )
        if not available:
            raise ModelUnavailableError(self.not_ready_reason())
        return available[-1]

    def acquire(self, version: str | None = None, label: str | None = None) -> LoadedVersion:
        """The version for one request, to hold with ``with``: an unloading version waits
        for its holders before it unloads."""
        return self.resolve(version, label)

    def check_admission(self) -> None:
        """Raise OverloadedError when the newest version's queue is full: the request is
        refused before its body is read or decoded, so an overloaded server spends little
        on the requests it cannot take."""
        available = self._available
        if available and available[-1].runner is not None:
            available[-1].runner.check_admission()

    def not_ready_reason(self) -> str:
        failed = [v for v in self.versions.values() if v.state is VersionState.FAILED]
        if failed:
            last = max(failed, key=lambda v: v.version)
            return (
                f"Model {self.name!r} has no version ready: version {last.version} failed "
                f"to load: {last.error}"
            )
        if self.source_error:
            return f"Model {self.name!r} has no version ready: {self.source_error}"
        if any(v.state is VersionState.LOADING for v in self.versions.values()):
            return f"Model {self.name!r} is loading; retry shortly."
        return f"Model {self.name!r} has no versions at {self.source.uri}."

    @property
    def ready(self) -> bool:
        return self.refreshed and bool(self.available())

    def load_failure(self) -> str:
        """Why the last poll did not bring up what the policy wants ("" when it did): no
        version ready, or a wanted version failed to load while an older one serves."""
        if not self.ready:
            return self.not_ready_reason()
        failed = [v for v in self.versions.values() if v.state is VersionState.FAILED]
        if failed:
            last = max(failed, key=lambda v: v.version)
            return f"Model {self.name!r} version {last.version} failed to load: {last.error}"
        return ""

    # -- control side ---------------------------------------------------------------------

    async def refresh(self) -> None:
        """Poll the source once and converge: load wanted versions, then unload others."""
        async with self._lock:
            try:
                await self._converge()
            finally:
                self.refreshed = True

    async def _converge(self) -> None:
        try:
            found = await asyncio.to_thread(self.source.versions)
        except LiqiError as exc:
            if exc.message != self.source_error:
                log.error("model=%s cannot list versions: %s", self.name, exc.message)
            self.source_error = exc.message
            return
        self.source_error = "" if found else f"no model versions found at {self.source.uri}"
        now = self._clock()
        excluded = {
            n
            for n, v in self.versions.items()
            if v.state is VersionState.FAILED and now < v.retry_at
        }
        # Load what the policy wants; when a wanted version fails, ask again without it, so
        # "latest" falls back to the newest version that loads.
        wanted: list[int] = []
        for _ in range(len(found) + 1):
            wanted = self.options.policy.select(n for n in found if n not in excluded)
            current = [n for n in self.versions if self._is_available(n)]
            failed = []
            for number in plan(current, wanted).load:
                await self._load(number)
                if not self._is_available(number):
                    failed.append(number)
            if not failed:
                break
            excluded.update(failed)
        if not any(self._is_available(n) for n in wanted):
            return  # nothing wanted came up: keep serving what serves
        for number in [n for n in self.versions if self._is_available(n) and n not in wanted]:
            await self._unload(self.versions[number])

    def _is_available(self, number: int) -> bool:
        entry = self.versions.get(number)
        return entry is not None and entry.state is VersionState.AVAILABLE

    async def _load(self, number: int) -> None:
        entry = self.versions.get(number)
        if entry is None or entry.state is not VersionState.FAILED:
            entry = LoadedVersion(number)
            self.versions[number] = entry
        self._set_state(entry, VersionState.LOADING)
        started = time.monotonic()
        try:
            servable = await asyncio.to_thread(self._load_blocking, number)
        except Exception as exc:  # a load can fail in any way; record and go on serving
            message = exc.message if isinstance(exc, LiqiError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, LiqiError):
                log.exception("model=%s version=%d failed to load", self.name, number)
            else:
                log.error("model=%s version=%d failed to load: %s", self.name, number, message)
            entry.error = message
            self._set_state(entry, VersionState.FAILED)
            entry.failures += 1
            entry.retry_at = self._clock() + min(MAX_RETRY_S, 5.0 * 2 ** (entry.failures - 1))
            return
        workers = (
            servable.worker_threads if isinstance(servable, RawServable) else self.options.workers
        )
        observer = self._observe_batch(self.name, number) if self._observe_batch else None
        entry.servable = servable
        entry.runner = BatchRunner(
            servable, self.options.batching, workers=workers, observe_batch=observer
        )
        entry.error = ""
        self._set_state(entry, VersionState.AVAILABLE)
        # A loaded model is a large, long-lived object graph (TensorFlow's especially). Freeze
        # it out of the garbage collector so full collections, triggered by the requests'
        # short-lived objects, do not walk it: measured as 100+ ms pauses in the p99.
        gc.freeze()
        signature = (
            "" if isinstance(servable, RawServable) else f" signature={servable.default_signature}"
        )
        log.info(
            "model=%s version=%d processor=%s%s loaded in %.2fs (ready in %.2fs)",
            self.name,
            number,
            servable.processor,
            signature,
            servable.load_time_s,
            time.monotonic() - started,
        )

    def _load_blocking(self, number: int) -> Servable:
        path = self.source.fetch(number)
        servable = self._loader_for(path).load(path, name=self.name, version=number)
        if self.options.warmup and not isinstance(servable, RawServable):
            servable.predict(servable.warmup_inputs())
        return servable

    async def _unload(self, entry: LoadedVersion) -> None:
        self._set_state(entry, VersionState.UNLOADING)
        if entry.in_flight:
            await entry.drained.wait()
        if entry.runner is not None:
            await asyncio.to_thread(entry.runner.stop)
        if entry.servable is not None:
            with contextlib.suppress(Exception):
                entry.servable.close()
        self._set_state(entry, VersionState.END)
        entry.servable = entry.runner = None
        log.info("model=%s version=%d unloaded", self.name, entry.version)

    async def close(self) -> None:
        """Unload every version (after their in-flight requests)."""
        async with self._lock:
            for entry in list(self.versions.values()):
                if entry.state is VersionState.AVAILABLE:
                    await self._unload(entry)


class ModelManager:
    """Every served model, polled every ``poll_interval_s`` (0: load once, never poll)."""

    def __init__(self, models: list[ServedModel], *, poll_interval_s: float = 5.0) -> None:
        self.models = {m.name: m for m in models}
        self.poll_interval_s = poll_interval_s
        self._task: asyncio.Task[None] | None = None
        self.became_ready = asyncio.Event()  # set once every model has a version serving
        self.polled = asyncio.Event()  # set once every model was polled (first loads tried)

    def get(self, name: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            served = ", ".join(sorted(self.models)) or "none"
            raise NotFoundError(f"No model named {name!r} is served here. Served models: {served}.")
        return model

    @property
    def ready(self) -> bool:
        return bool(self.models) and all(m.ready for m in self.models.values())

    def not_ready_reasons(self) -> list[str]:
        return [m.not_ready_reason() for m in self.models.values() if not m.ready]

    def load_failures(self) -> list[str]:
        """:meth:`ServedModel.load_failure` of every model that has one."""
        return [reason for m in self.models.values() if (reason := m.load_failure())]

    async def start(self) -> None:
        """Load the first versions (in the background) and keep polling."""
        self._task = asyncio.create_task(self._poll(), name="liqi-model-poll")

    async def _poll(self) -> None:
        while True:
            for model in self.models.values():
                try:
                    await model.refresh()
                except Exception:  # the poll loop never dies
                    log.exception("model=%s refresh failed", model.name)
            self.polled.set()
            if self.ready:
                self.became_ready.set()
            if self.poll_interval_s <= 0 and self.ready:
                return
            await asyncio.sleep(self.poll_interval_s if self.poll_interval_s > 0 else 1.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for model in self.models.values():
            await model.close()
