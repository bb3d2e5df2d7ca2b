"""TF Serving REST v1 codec: paths, predict row/columnar, classify/regress, bad input."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from liqi.errors import InvalidRequestError
from liqi.protocols import tfserving
from liqi.protocols.tensors import InferenceResponse, TensorSpec, conform_inputs, encode_error
from liqi.protocols.tfserving import UNNAMED_INPUT, Route

DATA = Path(__file__).parents[2] / "data" / "protocols"


def golden(name: str) -> bytes:
    return (DATA / name).read_bytes()


def response(**outputs: Any) -> InferenceResponse:
    return InferenceResponse(
        model="m", version=None, outputs={k: np.asarray(v) for k, v in outputs.items()}
    )


# -- paths --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v1/models/half", Route("half", "status")),
        ("/v1/models/half/versions/123", Route("half", "status", version="123")),
        ("/v1/models/half/labels/stable/metadata", Route("half", "metadata", label="stable")),
        ("/v1/models/half:predict", Route("half", "predict")),
        ("/v1/models/half/versions/2:classify", Route("half", "classify", version="2")),
        ("/v1/models/half/labels/canary:regress", Route("half", "regress", label="canary")),
        ("/V1/models/half:PREDICT", Route("half", "predict")),
    ],
)
def test_parse_path(path: str, route: Route) -> None:
    assert tfserving.parse_path(path) == route


def test_parse_path_outside_v1_is_not_ours() -> None:
    assert tfserving.parse_path("/v2/models/half/infer") is None


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/half/versions/50/labels/x:regress",
        "/v1/models/half/versions/abc:predict",
        "/v1/models/half:explain",
        "/v1/models",
        "/v1/models/half/labels/bad-label",
    ],
)
def test_malformed_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidRequestError, match="Malformed request"):
        tfserving.parse_path(path)


# -- predict: golden bodies ---------------------------------------------------------------


def test_row_format_golden() -> None:
    decoded = tfserving.decode_predict(golden("tfserving_predict_row.json"), model="m")
    assert not decoded.columnar
    inputs = decoded.inference.inputs
    assert decoded.inference.signature == "serving_default"
    assert inputs["tag"].tolist() == [b"foo", b"bar"]
    np.testing.assert_array_equal(inputs["signal"], [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]])
    assert inputs["sensor"].shape == (2, 2, 2)
    assert inputs["signal"].dtype == np.int64


def test_columnar_format_golden_decodes_like_row_format() -> None:
    rows = tfserving.decode_predict(golden("tfserving_predict_row.json"), model="m").inference
    columns = tfserving.decode_predict(golden("tfserving_predict_columnar.json"), model="m")
    assert columns.columnar
    assert columns.inference.signature is None
    for name in ("tag", "signal", "sensor"):
        np.testing.assert_array_equal(columns.inference.inputs[name], rows.inputs[name])


def test_half_plus_three_golden_round_trip() -> None:
    # api_rest.md's example model computes x / 2 + 3.
    decoded = tfserving.decode_predict(golden("tfserving_half_plus_two_request.json"), model="h")
    x = decoded.inference.inputs[UNNAMED_INPUT]
    np.testing.assert_array_equal(x, [1.0, 2.0, 5.0])
    body = tfserving.encode_predict(response(y=x * 0.5 + 3), columnar=decoded.columnar)
    assert orjson.loads(body) == orjson.loads(golden("tfserving_half_plus_two_response.json"))


def test_status_golden() -> None:
    body = tfserving.encode_status([("123", "AVAILABLE", "")])
    assert orjson.loads(body) == orjson.loads(golden("tfserving_status_response.json"))


# -- predict: responses -------------------------------------------------------------------


def test_row_response_with_several_outputs_is_a_list_of_objects() -> None:
    body = tfserving.encode_predict(
        response(scores=[[0.5, 0.25], [1.0, 2.0]], label=[1, 0]), columnar=False
    )
    assert orjson.loads(body) == {
        "predictions": [{"scores": [0.5, 0.25], "label": 1}, {"scores": [1.0, 2.0], "label": 0}]
    }


def test_columnar_response_unwraps_single_output_and_keys_several() -> None:
    assert orjson.loads(tfserving.encode_predict(response(y=[1, 2]), columnar=True)) == {
        "outputs": [1, 2]
    }
    both = tfserving.encode_predict(response(a=[1], b=[[2.5]]), columnar=True)
    assert orjson.loads(both) == {"outputs": {"a": [1], "b": [[2.5]]}}


def test_bytes_outputs_b64_when_named_bytes_else_utf8() -> None:
    raw = np.array([b"\xff\x00", b"ok"], dtype=object)
    body = tfserving.encode_predict(
        response(image_bytes=raw, text=np.array([b"hi", "there"], dtype=object)), columnar=True
    )
    assert orjson.loads(body) == {
        "outputs": {
            "image_bytes": [{"b64": "/wA="}, {"b64": "b2s="}],
            "text": ["hi", "there"],
        }
    }


def test_non_utf8_bytes_fall_back_to_b64() -> None:
    body = tfserving.encode_predict(response(y=np.array([b"\xff"], dtype=object)), columnar=True)
    assert orjson.loads(body) == {"outputs": [{"b64": "/w=="}]}


def test_row_response_with_mismatched_first_dims_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="columnar"):
        tfserving.encode_predict(response(a=[1, 2], b=[1]), columnar=False)


def test_scalar_output() -> None:
    body = tfserving.encode_predict(response(y=np.float32(1.5)), columnar=True)
    assert orjson.loads(body) == {"outputs": 1.5}


def test_b64_input_decodes_to_bytes() -> None:
    body = orjson.dumps({"instances": [{"b64": base64.b64encode(b"\x00\x01").decode()}]})
    x = tfserving.decode_predict(body, model="m").inference.inputs[UNNAMED_INPUT]
    assert x.dtype == object
    assert x.tolist() == [b"\x00\x01"]


def test_error_body() -> None:
    assert orjson.loads(encode_error("Servable not found")) == {"error": "Servable not found"}


# -- classify / regress -------------------------------------------------------------------


def test_decode_examples() -> None:
    body = orjson.dumps(
        {
            "signature_name": "classify_x",
            "context": {"country": "CN"},
            "examples": [{"x": 1.5, "ids": [1, 2]}, {"x": [2.0], "blob": {"b64": "AAE="}}],
        }
    )
    decoded = tfserving.decode_examples(body, model="m", version="3")
    assert decoded.signature == "classify_x"
    assert decoded.context["country"].tolist() == [b"CN"]
    first, second = decoded.examples
    assert first["x"].dtype == np.float32
    assert first["ids"].dtype == np.int64
    assert second["blob"].tolist() == [b"\x00\x01"]


def test_classify_and_regress_goldens() -> None:
    classify = tfserving.encode_classify(np.array([[12.0]]))
    assert orjson.loads(classify) == orjson.loads(golden("tfserving_classify_response.json"))
    regress = tfserving.encode_regress(np.array([[42.0]]))
    assert orjson.loads(regress) == orjson.loads(golden("tfserving_regress_response.json"))


def test_classify_with_labels() -> None:
    body = tfserving.encode_classify(
        np.array([[0.75, 0.25]]), np.array([[b"cat", b"dog"]], dtype=object)
    )
    assert orjson.loads(body) == {"results": [[["cat", 0.75], ["dog", 0.25]]]}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'{"examples": []}', "non-empty"),
        (b'{"examples": [[1]]}', "object of features"),
        (b'{"examples": [{"x": [[1, 2]]}]}', "flat list"),
    ],
)
def test_bad_examples(body: bytes, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        tfserving.decode_examples(body, model="m")


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'{"instances": [NaN]}', "NaN or Infinity"),
        (b'{"inputs": [1.0, Infinity]}', "NaN or Infinity"),
        (b'{"inputs": [1e400]}', "NaN or Infinity"),
        (b"{'inputs': 1", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, received list"),
        (b'{"signature_name": "x"}', "exactly one of 'instances'"),
        (b'{"instances": [1], "inputs": [1]}', "exactly one of 'instances'"),
        (b'{"instances": []}', "non-empty list"),
        (b'{"instances": [{"a": 1}, {"b": 2}]}', "Instance 1 has inputs"),
        (b'{"instances": [{"a": [1, 2]}, {"a": [1]}]}', "'a' is not a rectangular"),
        (b'{"inputs": {"x": [[1, 2], [3]]}}', "'x' is not a rectangular"),
        (b'{"inputs": {"x": ["a", 1]}}', "'x' holds a int value"),
        (b'{"inputs": {"x": [null, 1]}}', "'x' holds a null value"),
        (b'{"inputs": {"x": [{"b64": "not base64!"}]}}', "'x' has invalid base64"),
        (b'{"inputs": {"x": {"b64": 7}}}', "'b64' must be a string"),
        (b'{"inputs": {}}', "at least one input"),
        (b'{"signature_name": 3, "inputs": [1]}', "'signature_name' must be a string"),
    ],
)
def test_bad_predict_bodies(body: bytes, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        tfserving.decode_predict(body, model="m")


def test_conform_names_input_expected_and_received() -> None:
    inputs = tfserving.decode_predict(b'{"inputs": {"x": [[1.5, 2.0]]}}', model="m")
    spec = {"x": TensorSpec("x", np.dtype(np.float32), (None, 3))}
    with pytest.raises(
        InvalidRequestError,
        match=r"Input 'x' expects shape/dtype \[-1, 3\] float32, received \[1, 2\] float64",
    ):
        conform_inputs(inputs.inference.inputs, spec)


def test_conform_refuses_floats_for_int_and_names_unknown_inputs() -> None:
    floats = {"x": np.array([1.5])}
    with pytest.raises(InvalidRequestError, match="expects shape/dtype unknown int32"):
        conform_inputs(floats, {"x": TensorSpec("x", np.dtype(np.int32))})
    with pytest.raises(InvalidRequestError, match=r"Unknown input 'y'\. The model's inputs are: x"):
        conform_inputs({"y": np.array([1])}, {"x": TensorSpec("x", np.dtype(np.int32))})
    with pytest.raises(InvalidRequestError, match="expects shape/dtype unknown uint8"):
        conform_inputs({"x": np.array([300])}, {"x": TensorSpec("x", np.dtype(np.uint8))})


def test_conform_casts_same_kind() -> None:
    out = conform_inputs(
        {"x": np.array([[1, 2]])}, {"x": TensorSpec("x", np.dtype(np.float32), (None, 2))}
    )
    assert out["x"].dtype == np.float32


# -- round trips --------------------------------------------------------------------------

NUMERIC = [
    np.bool_, np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64,
    np.float16, np.float32, np.float64,
]  # fmt: skip
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def finite_arrays(dtype: Any) -> st.SearchStrategy[np.ndarray]:
    elements: Any = (
        {"allow_nan": False, "allow_infinity": False} if np.dtype(dtype).kind == "f" else None
    )
    if np.dtype(dtype) == np.uint64:
        # TF Serving's JSON carries integers as int64 at most (no tensor type holds more).
        elements = st.integers(min_value=0, max_value=2**63 - 1)
    return hnp.arrays(np.dtype(dtype), SHAPES, elements=elements)


def bytes_arrays() -> st.SearchStrategy[np.ndarray]:
    return SHAPES.flatmap(
        lambda shape: st.lists(
            st.binary(max_size=8), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))
        ).map(lambda items: np.array([*items, b""], dtype=object)[:-1].reshape(shape))
    )


@settings(max_examples=25, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([*NUMERIC, object]), columnar=st.booleans())
def test_predict_request_round_trip(data: st.DataObject, dtype: Any, columnar: bool) -> None:
    array = data.draw(bytes_arrays() if dtype is object else finite_arrays(dtype))
    body = tfserving.encode_predict_request({"x": array}, columnar=columnar, signature="s")
    decoded = tfserving.decode_predict(body, model="m")
    assert decoded.columnar == columnar
    assert decoded.inference.signature == "s"
    spec = {"x": TensorSpec("x", array.dtype, tuple(array.shape))}
    out = conform_inputs(decoded.inference.inputs, spec)["x"]
    assert out.dtype == array.dtype
    np.testing.assert_array_equal(out, array)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(NUMERIC))
def test_predict_response_columnar_round_trip(data: st.DataObject, dtype: Any) -> None:
    array = data.draw(finite_arrays(dtype))
    body = tfserving.encode_predict(response(y=array), columnar=True)
    decoded = tfserving.to_array(orjson.loads(body)["outputs"], "y")
    np.testing.assert_array_equal(decoded.astype(array.dtype), array)
