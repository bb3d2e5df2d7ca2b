"""ServiceSpec: the EAS service JSON as the seed and EAS's docs write it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, strategies as st

from liqi.core.service_spec import (
    AutoscalerSpec,
    RollingStrategy,
    load_document,
    merge_documents,
    parse_service_spec,
)
from liqi.errors import InvalidRequestError

pytestmark = pytest.mark.timeout(30)

SEED = {
    "name": "mnist",
    "generate_token": "false",
    "model_path": "oss://mybucket/models/",
    "processor": "tensorflow_cpu",
    "osscredentials": "/home/me/tools/.osscredentials",
    "metadata": {"region": "shanghai", "instance": 1, "cpu": 1, "memory": 2000},
}


def test_the_seeds_file_as_written() -> None:
    parsed = parse_service_spec(SEED)
    spec = parsed.spec
    assert parsed.warnings == ()
    assert spec.name == "mnist"
    assert spec.generate_token is False
    assert spec.model_path == "oss://mybucket/models/"
    assert spec.processor == "tensorflow_cpu"
    assert spec.osscredentials == "/home/me/tools/.osscredentials"
    assert (spec.instance, spec.cpu, spec.memory_mb, spec.region) == (1, 1.0, 2000, "shanghai")
    assert spec.batch_policy.max_batch_size == 1  # EAS: no batching unless asked
    assert spec.document == SEED


def test_the_full_featured_spec() -> None:
    document = load_document(
        b"""{"token": "abc", "processor": "tensorflow_cpu_1.12",
        "model_path": "oss://examplebucket/exampledir/",
        "oss_endpoint": "oss-cn-beijing.aliyuncs.com",
        "warm_up_data_path": "oss://examplebucket/warmup.bin",
        "runtime": {"enable_crash_block": false},
        "autoscaler": {"min": 2, "max": 5, "strategies": {"qps": 10}},
        "metadata": {"name": "test_eascmd", "instance": 1, "cpu": 1, "memory": 2000, "gpu": 0,
          "rpc": {"batching": true, "keepalive": 5000, "max_batch_size": 16,
                  "max_batch_timeout": 50, "max_queue_size": 64, "worker_threads": 5},
          "rolling_strategy": {"max_surge": 1, "max_unavailable": 1},
          "eas.termination_grace_period": 30},
        "containers": [{"image": "x", "port": 8000}]}"""
    )
    parsed = parse_service_spec(document)
    spec = parsed.spec
    assert spec.name == "test_eascmd"
    assert spec.token == "abc"
    assert spec.generate_token is True
    assert spec.autoscaler == AutoscalerSpec(min=2, max=5, qps=10.0)
    assert spec.rolling == RollingStrategy(max_surge=1, max_unavailable=1)
    assert spec.warm_up_data_path == "oss://examplebucket/warmup.bin"
    policy = spec.batch_policy
    assert (policy.max_batch_size, policy.max_batch_wait_s, policy.max_queue_size) == (
        16,
        0.05,
        64,
    )
    assert spec.request_timeout_s == 5.0
    assert parsed.warnings == (
        "Ignored fields containers, oss_endpoint, runtime: accepted, not used by liqi.",
        "Ignored field metadata.eas.termination_grace_period: accepted, not used by liqi.",
    )


def test_flat_rpc_keys_and_a_custom_processor() -> None:
    parsed = parse_service_spec(
        {
            "name": "pai_eas_tutorial_04",
            "processor_entry": "./app.py",
            "processor_type": "python",
            "processor_path": "oss://path/to/processor",
            "metadata": {
                "region": "cn-hangzhou",
                "instance": 1,
                "memory": 2000,
                "rpc.keepalive": 10000,
                "resource": "resource_id",
                "cpu": 1,
            },
        }
    )
    spec = parsed.spec
    assert spec.model_path is None
    assert spec.processor_type == "python"
    assert spec.rpc == {"keepalive": 10000}
    assert spec.request_timeout_s == 10.0
    assert parsed.warnings == ()


PYTHON = {
    "name": "custom",
    "processor_entry": "./app.py",
    "processor_type": "python",
    "processor_path": "oss://path/to/processor",
}


@pytest.mark.parametrize(
    ("document", "idempotent"),
    [
        (SEED, True),
        ({**SEED, "processor": "onnx"}, True),
        ({**SEED, "processor": "sklearn"}, True),
        (PYTHON, False),
        ({**PYTHON, "processor_idempotent": False}, False),
        ({**PYTHON, "processor_idempotent": True}, True),
        ({**PYTHON, "processor_idempotent": "true"}, True),
        ({k: v for k, v in PYTHON.items() if k != "processor_type"}, False),  # entry alone
        ({**SEED, "processor": "python", "processor_path": "oss://p/"}, False),
    ],
)
def test_only_a_python_processor_is_not_idempotent_unless_it_says_so(
    document: dict[str, Any], idempotent: bool
) -> None:
    parsed = parse_service_spec(document)
    assert parsed.spec.idempotent is idempotent
    assert parsed.warnings == ()


def test_processor_idempotent_on_a_built_in_processor_is_warned_about() -> None:
    parsed = parse_service_spec({**SEED, "processor_idempotent": False})
    assert parsed.spec.idempotent is True
    assert parsed.warnings == (
        "processor_idempotent is read for python processors only: a request to a built-in "
        "processor (tensorflow_cpu) is always sent to another instance when one fails before "
        "answering.",
    )
    with pytest.raises(InvalidRequestError, match="'processor_idempotent' must be true or false"):
        parse_service_spec({**PYTHON, "processor_idempotent": "sometimes"})


def test_autoscaler_scale_strategies_list() -> None:
    document = {**SEED, "autoscaler": {"min": 0, "max": 3, "scaleStrategies": [
        {"metricName": "qps", "threshold": 20}]}}  # fmt: skip
    assert parse_service_spec(document).spec.autoscaler == AutoscalerSpec(min=0, max=3, qps=20.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": None}, "needs 'name'"),
        ({"name": "${your_model_name}"}, "placeholder '${your_model_name}'"),
        ({"name": "9lives"}, "Invalid service name '9lives'"),
        ({"name": 7}, "'name' must be a string"),
        ({"model_path": "oss://${your_bucket}/models/"}, "placeholder"),
        ({"model_path": None}, "needs 'model_path'"),
        ({"processor": None}, "needs 'processor'"),
        ({"generate_token": "maybe"}, "'generate_token' must be true or false"),
        ({"metadata": {"instance": "two"}}, "'metadata.instance' must be a number"),
        ({"metadata": {"memory": -5}}, "'metadata.memory' must be 0 or more"),
        ({"metadata": []}, "'metadata' must be an object"),
        ({"metadata": {"rpc": {"batching": "yes"}}}, "'metadata.rpc.batching' must be true"),
        ({"autoscaler": {"min": 3, "max": 2}}, "below autoscaler.min"),
        ({"autoscaler": [1]}, "'autoscaler' must be an object"),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], message: str) -> None:
    document = {**SEED, **change}
    document = {k: v for k, v in document.items() if v is not None}
    with pytest.raises(InvalidRequestError, match=message.replace("$", r"\$").replace("{", r"\{")):
        parse_service_spec(document)


def test_gpu_is_accepted_with_a_warning() -> None:
    parsed = parse_service_spec({**SEED, "metadata": {"instance": 1, "gpu": 1}})
    assert parsed.spec.gpu == 1
    assert parsed.warnings == ("metadata.gpu is accepted but this machine serves on CPU.",)


def test_load_document_errors() -> None:
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        load_document(b"{name: 1}")
    with pytest.raises(InvalidRequestError, match="must be a JSON object"):
        load_document(b"[1]")


def test_merge_is_eas_update_merge() -> None:
    assert merge_documents({"a": "b"}, {"c": "d"}) == {"a": "b", "c": "d"}
    merged = merge_documents(SEED, {"metadata": {"instance": 3}, "processor": "onnx"})
    assert merged["metadata"] == {"region": "shanghai", "instance": 3, "cpu": 1, "memory": 2000}
    assert merged["processor"] == "onnx"
    assert SEED["metadata"]["instance"] == 1  # inputs untouched


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=3), json_values, max_size=4), st.dictionaries(
    st.text(max_size=3), json_values, max_size=4))  # fmt: skip
def test_merge_properties(base: dict[str, Any], patch: dict[str, Any]) -> None:
    merged = merge_documents(base, patch)
    assert merge_documents(base, {}) == base
    assert set(merged) == set(base) | set(patch)
    for key, value in patch.items():
        if not (isinstance(value, dict) and isinstance(base.get(key), dict)):
            assert merged[key] == value


def test_autoscaler_behavior_windows_are_read() -> None:
    spec = parse_service_spec(
        {
            "name": "s",
            "model_path": "oss://b/m/",
            "processor": "tensorflow_cpu",
            "autoscaler": {
                "min": 0,
                "max": 3,
                "scaleStrategies": [{"metricName": "qps", "threshold": 5}],
                "behavior": {
                    "scaleUp": {"stabilizationWindowSeconds": 0},
                    "scaleDown": {"stabilizationWindowSeconds": 30},
                    "onZero": {"scaleDownGracePeriodSeconds": 60},
                },
            },
        }
    ).spec
    assert spec.autoscaler is not None
    assert (spec.autoscaler.qps, spec.autoscaler.up_cooldown_s) == (5.0, 0.0)
    assert (spec.autoscaler.down_cooldown_s, spec.autoscaler.idle_to_zero_s) == (30.0, 60.0)
    with pytest.raises(InvalidRequestError, match=r"autoscaler\.behavior\.scaleDown"):
        parse_service_spec(
            {
                "name": "s",
                "model_path": "oss://b/m/",
                "processor": "onnx",
                "autoscaler": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": "x"}}},
            }
        )
