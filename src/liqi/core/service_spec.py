"""The EAS service JSON (``eas_mnist.json`` and friends), parsed as the seed writes it.

:func:`parse_service_spec` turns a document into a frozen :class:`ServiceSpec` plus the
warnings for fields liqi accepts but does not use (named, never fatal); a field of the
wrong type is an error naming the field and what it must be. :func:`merge_documents` is
EAS's ``UpdateService`` merge: nested objects merge key by key, everything else replaces.
Pure: no I/O; paths and URIs are checked for form only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from liqi.core.batching import BatchPolicy
from liqi.errors import InvalidRequestError

SERVICE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\$\{[^}]*\}|<[^>]*>")
MODEL_SCHEMES = ("oss://", "http://", "https://", "file://", "model:")
# Every number in the document is at most this (1e9 MB, instances, ms, seconds...): beyond it
# a value is a typo, and ``int()`` of it or a timer set from it could fail later.
MAX_NUMBER = 1e9

# Fields liqi reads; the rest of EAS's schema is accepted with a warning.
_TOP = {
    "name", "token", "generate_token", "model_path", "processor", "processor_path",
    "processor_entry", "processor_type", "osscredentials", "metadata", "autoscaler",
    "warm_up_data_path", "model_entry", "model_config", "rolling_strategy",
    "processor_idempotent",  # liqi's own: EAS has no such field
}  # fmt: skip
_METADATA = {
    "name", "instance", "cpu", "memory", "gpu", "region", "rpc", "rolling_strategy",
    "resource", "qos",
}  # fmt: skip
_RPC = {
    "batching", "keepalive", "max_batch_size", "max_batch_timeout", "max_queue_size",
    "worker_threads", "io_threads", "rate_limit", "enable_sigterm",
}  # fmt: skip


@dataclass(frozen=True)
class AutoscalerSpec:
    """Scale between ``min`` and ``max`` instances on ``qps`` per instance."""

    min: int
    max: int
    qps: float | None = None
    # EAS's "behavior": scaleUp/scaleDown stabilizationWindowSeconds, onZero grace period.
    up_cooldown_s: float | None = None
    down_cooldown_s: float | None = None
    idle_to_zero_s: float | None = None


@dataclass(frozen=True)
class RollingStrategy:
    max_surge: int = 1
    max_unavailable: int = 0


@dataclass(frozen=True)
class ServiceSpec:
    """What a service is: its model, processor, resources and how it scales and rolls."""

    name: str
    model_path: str | None
    processor: str | None
    generate_token: bool = True
    token: str | None = None
    processor_path: str | None = None
    processor_entry: str | None = None
    processor_type: str | None = None
    osscredentials: str | None = None
    instance: int = 1
    cpu: float | None = None
    memory_mb: int | None = None
    gpu: int = 0
    region: str | None = None
    resource_group: str | None = None  # metadata.resource: liqi's resource group (None: default)
    rpc: dict[str, Any] = field(default_factory=dict)
    autoscaler: AutoscalerSpec | None = None
    rolling: RollingStrategy = field(default_factory=RollingStrategy)
    warm_up_data_path: str | None = None
    processor_idempotent: bool = False  # liqi's extension: a python processor may be retried
    document: dict[str, Any] = field(default_factory=dict)  # as given, for desc and modify

    @property
    def python_processor(self) -> bool:
        """Served by a custom python processor (rather than a built-in one)."""
        return (
            self.processor_entry is not None
            or (self.processor_type or "").strip().lower() == "python"
            or (self.processor or "").strip().lower() == "python"
        )

    @property
    def idempotent(self) -> bool:
        """Whether a request may be sent to the service twice: the gateway then retries one
        an instance may have received. A built-in processor (TensorFlow, ONNX, scikit-learn)
        only computes; a python processor may have side effects, so it is idempotent only
        when the JSON says ``"processor_idempotent": true``."""
        return self.processor_idempotent or not self.python_processor

    @property
    def batch_policy(self) -> BatchPolicy:
        return BatchPolicy.from_eas(self.rpc)

    @property
    def request_timeout_s(self) -> float | None:
        keepalive = self.rpc.get("keepalive")
        return float(keepalive) / 1000 if keepalive is not None else None


@dataclass(frozen=True)
class ParsedSpec:
    spec: ServiceSpec
    warnings: tuple[str, ...] = ()


def load_document(body: bytes | str, source: str = "the service JSON") -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"{source} is not valid JSON: {exc}.") from None
    if not isinstance(document, dict):
        raise InvalidRequestError(
            f"{source} must be a JSON object, received {type(document).__name__}."
        )
    return document


def merge_documents(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """EAS's merge update: objects merge recursively, any other value replaces."""
    merged = dict(base)
    for key, value in patch.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_documents(old, value)
        else:
            merged[key] = value
    return merged


def parse_service_spec(document: Mapping[str, Any]) -> ParsedSpec:
    """Read an EAS service document. Raises InvalidRequestError naming the bad field."""
    doc = dict(document)
    warnings: list[str] = []
    _unknown(doc, _TOP, "", warnings)
    metadata = _object(doc, "metadata")
    _unknown(
        metadata, _METADATA | {k for k in metadata if k.startswith("rpc.")}, "metadata.", warnings
    )
    rpc = dict(_object(metadata, "rpc", "metadata.rpc"))
    for key in [k for k in metadata if k.startswith("rpc.")]:  # old flat style
        rpc.setdefault(key.removeprefix("rpc."), metadata[key])
    _unknown(rpc, _RPC, "metadata.rpc.", warnings)
    for key in ("batching", "enable_sigterm"):
        if key in rpc:
            rpc[key] = _bool(rpc[key], f"metadata.rpc.{key}")
    for key in _RPC - {"batching", "enable_sigterm"}:
        if key in rpc:
            _number(rpc[key], f"metadata.rpc.{key}", minimum=0)
    name = _string(doc.get("name") or metadata.get("name"), "name", required=True)
    assert name is not None
    _no_placeholder(name, "name")
    if not SERVICE_NAME_RE.fullmatch(name):
        raise InvalidRequestError(
            f"Invalid service name {name!r}: use 1 to 63 letters, digits or underscores, "
            "starting with a letter (for example 'mnist_saved_model_example')."
        )
    model_path = _string(doc.get("model_path"), "model_path")
    processor = _string(doc.get("processor"), "processor")
    processor_entry = _string(doc.get("processor_entry"), "processor_entry")
    if model_path is None and processor_entry is None:
        raise InvalidRequestError(
            "The service needs 'model_path' (oss://bucket/models/, a local folder or an "
            "http(s):// tarball), or a custom processor with 'processor_path' and "
            "'processor_entry'."
        )
    if model_path is not None:
        _no_placeholder(model_path, "model_path")
    if processor is None and processor_entry is None:
        raise InvalidRequestError(
            'The service needs \'processor\' (e.g. "tensorflow_cpu", "onnx", "sklearn") '
            "or a custom processor ('processor_type': \"python\" with 'processor_path' and "
            "'processor_entry')."
        )
    spec = ServiceSpec(
        name=name,
        model_path=model_path,
        processor=processor,
        generate_token=_bool(doc.get("generate_token", True), "generate_token"),
        token=_string(doc.get("token"), "token"),
        processor_path=_string(doc.get("processor_path"), "processor_path"),
        processor_entry=processor_entry,
        processor_type=_string(doc.get("processor_type"), "processor_type"),
        osscredentials=_string(doc.get("osscredentials"), "osscredentials"),
        instance=int(_number(metadata.get("instance", 1), "metadata.instance", minimum=0)),
        cpu=_optional_number(metadata.get("cpu"), "metadata.cpu"),
        memory_mb=_optional_int(metadata.get("memory"), "metadata.memory"),
        gpu=int(_number(metadata.get("gpu", 0), "metadata.gpu", minimum=0)),
        region=_string(metadata.get("region"), "metadata.region"),
        resource_group=_string(metadata.get("resource"), "metadata.resource"),
        rpc=rpc,
        autoscaler=_autoscaler(doc.get("autoscaler")),
        rolling=_rolling(metadata.get("rolling_strategy", doc.get("rolling_strategy"))),
        warm_up_data_path=_string(doc.get("warm_up_data_path"), "warm_up_data_path"),
        processor_idempotent=_bool(doc.get("processor_idempotent", False), "processor_idempotent"),
        document=doc,
    )
    if spec.gpu:
        warnings.append("metadata.gpu is accepted but this machine serves on CPU.")
    if "processor_idempotent" in doc and not spec.python_processor:
        warnings.append(
            "processor_idempotent is read for python processors only: a request to a "
            f"built-in processor ({spec.processor}) is always sent to another instance "
            "when one fails before answering."
        )
    return ParsedSpec(spec, tuple(warnings))


# -- field readers --------------------------------------------------------------------------


def _unknown(obj: Mapping[str, Any], known: set[str], prefix: str, out: list[str]) -> None:
    extra = sorted(set(obj) - known)
    if extra:
        out.append(
            f"Ignored field{'s' if len(extra) > 1 else ''} "
            f"{', '.join(prefix + k for k in extra)}: accepted, not used by liqi."
        )


def _object(obj: Mapping[str, Any], key: str, where: str | None = None) -> dict[str, Any]:
    value = obj.get(key, {})
    if not isinstance(value, dict):
        raise InvalidRequestError(
            f"'{where or key}' must be an object, received {type(value).__name__}."
        )
    return value


def _string(value: Any, where: str, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidRequestError(f"The service needs '{where}' (a string).")
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(
            f"'{where}' must be a string, received {type(value).__name__} {value!r:.40}."
        )
    return value


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidRequestError(
        f'\'{where}\' must be true or false (or the strings "true"/"false"), '
        f"received {value!r:.40}."
    )


def _number(
    value: Any, where: str, *, minimum: float | None = None, maximum: float = MAX_NUMBER
) -> float:
    """A finite number from ``minimum`` (when given) to ``maximum``: JSON's ``1e400`` reads
    as infinity and ``NaN`` compares false with everything, so both are refused here."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidRequestError(f"'{where}' must be a number, received {value!r:.40}.")
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequestError(f"'{where}' must be a number, received {value!r:.40}.") from None
    if not math.isfinite(number):
        raise InvalidRequestError(f"'{where}' must be a finite number, received {value!r:.40}.")
    if minimum is not None and number < minimum:
        raise InvalidRequestError(f"'{where}' must be {minimum:g} or more, received {value!r}.")
    if abs(number) > maximum:
        raise InvalidRequestError(
            f"'{where}' is out of range: use at most {maximum:g}, received {value!r:.40}."
        )
    return number


def _optional_number(value: Any, where: str) -> float | None:
    return None if value is None else _number(value, where, minimum=0)


def _optional_int(value: Any, where: str) -> int | None:
    return None if value is None else int(_number(value, where, minimum=0))


def _autoscaler(value: Any) -> AutoscalerSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequestError('\'autoscaler\' must be an object like {"min": 1, "max": 3}.')
    low = int(_number(value.get("min", 1), "autoscaler.min", minimum=0))
    high = int(_number(value.get("max", max(low, 1)), "autoscaler.max", minimum=1))
    if high < low:
        raise InvalidRequestError(f"autoscaler.max ({high}) is below autoscaler.min ({low}).")
    strategies = value.get("strategies") or value.get("scaleStrategies") or {}
    qps: float | None = None
    if isinstance(strategies, dict):
        raw = strategies.get("qps")
        qps = None if raw is None else _number(raw, "autoscaler.strategies.qps", minimum=0)
    elif isinstance(strategies, list):  # [{"metricName": "qps", "threshold": 10}]
        for entry in strategies:
            if isinstance(entry, dict) and entry.get("metricName") == "qps":
                qps = _number(
                    entry.get("threshold"), "autoscaler.scaleStrategies.threshold", minimum=0
                )
    else:
        raise InvalidRequestError("'autoscaler.strategies' must be an object like {\"qps\": 10}.")
    behavior = value.get("behavior") or {}
    if not isinstance(behavior, dict):
        raise InvalidRequestError("'autoscaler.behavior' must be an object.")
    return AutoscalerSpec(
        min=low,
        max=high,
        qps=qps,
        up_cooldown_s=_window(behavior, "scaleUp", "stabilizationWindowSeconds"),
        down_cooldown_s=_window(behavior, "scaleDown", "stabilizationWindowSeconds"),
        idle_to_zero_s=_window(behavior, "onZero", "scaleDownGracePeriodSeconds"),
    )


def _window(behavior: Mapping[str, Any], part: str, key: str) -> float | None:
    section = behavior.get(part) or {}
    if not isinstance(section, dict):
        raise InvalidRequestError(f"'autoscaler.behavior.{part}' must be an object.")
    raw = section.get(key)
    return None if raw is None else _number(raw, f"autoscaler.behavior.{part}.{key}", minimum=0)


def _rolling(value: Any) -> RollingStrategy:
    if value is None:
        return RollingStrategy()
    if not isinstance(value, dict):
        raise InvalidRequestError("'metadata.rolling_strategy' must be an object.")
    return RollingStrategy(
        max_surge=int(_number(value.get("max_surge", 1), "rolling_strategy.max_surge", minimum=0)),
        max_unavailable=int(
            _number(value.get("max_unavailable", 0), "rolling_strategy.max_unavailable", minimum=0)
        ),
    )


def _no_placeholder(value: str, where: str) -> None:
    found = _PLACEHOLDER.search(value)
    if found:
        raise InvalidRequestError(
            f"'{where}' still holds the placeholder {found.group(0)!r} ({value!r}); "
            "replace it with a real value."
        )
