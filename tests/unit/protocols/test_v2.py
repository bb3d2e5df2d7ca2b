"""V2 codec: JSON and binary tensors, metadata, bad input, tritonclient."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from liqi.errors import InvalidRequestError
from liqi.protocols import v2
from liqi.protocols.tensors import InferenceResponse, TensorSpec
from liqi.protocols.v2 import DATATYPES, Route

DATA = Path(__file__).parents[2] / "data" / "protocols"


def golden(name: str) -> bytes:
    return (DATA / name).read_bytes()


def decode(body: bytes, header_length: int | None = None) -> v2.InferRequest:
    return v2.decode_infer_request(body, model="m", header_length=header_length)


# -- paths and metadata -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v2", Route("server_metadata")),
        ("/v2/health/live", Route("live")),
        ("/v2/health/ready", Route("ready")),
        ("/v2/models/mnist", Route("model_metadata", "mnist")),
        ("/v2/models/mnist/versions/3", Route("model_metadata", "mnist", "3")),
        ("/v2/models/mnist/ready", Route("model_ready", "mnist")),
        ("/v2/models/mnist/versions/3/infer", Route("infer", "mnist", "3")),
    ],
)
def test_parse_path(path: str, route: Route) -> None:
    assert v2.parse_path(path) == route


@pytest.mark.parametrize("path", ["/v1/models/m", "/v2/models/m/explain", "/v2/health"])
def test_parse_path_not_v2(path: str) -> None:
    assert v2.parse_path(path) is None


def test_model_metadata_golden() -> None:
    body = v2.encode_model_metadata(
        "mymodel",
        ["1"],
        "tensorflow_savedmodel",
        [TensorSpec("input0", np.dtype(np.float32), (None, 4))],
        [TensorSpec("output0", np.dtype(np.float32), (None, 3))],
    )
    assert orjson.loads(body) == orjson.loads(golden("v2_model_metadata.json"))


def test_server_metadata_and_health() -> None:
    body = v2.encode_server_metadata("liqi", "0.1.0", ["binary_tensor_data"])
    assert orjson.loads(body) == {
        "name": "liqi",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }
    assert orjson.loads(v2.encode_health("ready", False)) == {"ready": False}


# -- infer: golden bodies -----------------------------------------------------------------


def test_spec_request_example_is_refused_for_its_shape_mismatch() -> None:
    # The spec's own example sends shape [3] with one BOOL element.
    with pytest.raises(
        InvalidRequestError, match=r"'input1' has shape \[3\] \(3 elements\).*holds 1 elements"
    ):
        decode(golden("v2_infer_request.json"))


def test_spec_request_example_with_consistent_shape() -> None:
    document = orjson.loads(golden("v2_infer_request.json"))
    document["inputs"][1]["shape"] = [1]
    request = decode(orjson.dumps(document))
    assert request.id == "42"
    assert request.inference.outputs == ("output0",)
    assert request.binary is False or request.binary == frozenset()
    x = request.inference.inputs["input0"]
    assert x.dtype == np.uint32
    np.testing.assert_array_equal(x, [[1, 2], [3, 4]])
    assert request.inference.inputs["input1"].tolist() == [True]


def test_response_golden() -> None:
    out = np.array([1.0, 1.1, 2.0, 2.1, 3.0, 3.1], dtype=np.float32).reshape(3, 2)
    encoded = v2.encode_infer_response(
        InferenceResponse("mymodel", None, {"output0": out}), request_id="42"
    )
    assert encoded.header_length is None
    assert encoded.content_type == "application/json"
    expected = orjson.loads(golden("v2_infer_response.json"))
    assert orjson.loads(encoded.body) == {"model_name": "mymodel", **expected}


def test_nested_data_and_parameters() -> None:
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}
            ],
            "parameters": {"content_type": "np", "binary_data_output": True},
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}],
        }
    )
    request = decode(body)
    assert request.inference.parameters["content_type"] == "np"
    assert request.binary is True
    assert request.binary_outputs == frozenset({"y"})
    assert request.inference.inputs["x"].dtype == np.float32


def test_binary_response_layout() -> None:
    response = InferenceResponse(
        "m",
        "2",
        {
            "y": np.array([1.5, -2.0], dtype=np.float32),
            "s": np.array([b"ab", b""], dtype=object),
            "j": np.array([7], dtype=np.int64),
        },
    )
    encoded = v2.encode_infer_response(response, binary={"y", "s"})
    assert encoded.content_type == "application/octet-stream"
    assert encoded.header_length is not None
    header = orjson.loads(encoded.body[: encoded.header_length])
    assert header["model_version"] == "2"
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert header["outputs"][2]["data"] == [7]
    raw = encoded.body[encoded.header_length :]
    assert raw == struct.pack("<2f", 1.5, -2.0) + struct.pack("<I", 2) + b"ab" + b"\0\0\0\0"


# -- bad input ----------------------------------------------------------------------------


def tensor(**fields: Any) -> bytes:
    entry = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0], **fields}
    return orjson.dumps({"inputs": [entry]})


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"[]", "must be a JSON object, received list"),
        (b"{", "not valid JSON"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}]}', "NaN"),
        (b'{"inputs": []}', "non-empty list"),
        (b'{"inputs": [1]}', "string 'name'"),
        (tensor(datatype="BF16"), "'x' has unknown datatype 'BF16'; supported: BOOL"),
        (tensor(datatype=None), "unknown datatype None"),
        (tensor(shape=[3]), r"'x' has shape \[3\] \(3 elements\) but its data holds 2"),
        (tensor(shape=[-1]), "non-negative integers"),
        (tensor(shape="2"), "non-negative integers"),
        (tensor(data=[[1.0], [2.0, 3.0]]), "'x' data is not a rectangular tensor"),
        (tensor(datatype="INT32", data=[1.5, 2]), "'x' has datatype INT32 but data holds floats"),
        (tensor(datatype="BOOL", data=[1, 0]), "'x' has datatype BOOL but data holds integers"),
        (tensor(datatype="FP32", data=["a", "b"]), "datatype FP32 but data holds strings"),
        (tensor(datatype="INT32", data=[True, False]), "INT32 but data holds booleans"),
        (tensor(datatype="UINT8", data=[1, 256]), r"outside UINT8's range \[0, 255\]"),
        (tensor(datatype="INT64", data=[1, 2**63]), "outside INT64's range"),
        (tensor(datatype="UINT64", data=[1.5, 2**63]), "UINT64 but data holds floats"),
        (tensor(datatype="FP16", data=[1.0, 1e6]), "out of range for FP16"),
        (tensor(datatype="BYTES", data=["a", 2]), "element 1 is 2, not a string"),
        (tensor(datatype="BYTES", data="ab"), "not a list"),
        (tensor(data=None), "neither 'data' nor"),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}), "neither"),
        (
            orjson.dumps({"inputs": [orjson.loads(tensor())["inputs"][0]] * 2}),
            "'x' appears twice",
        ),
        (tensor(parameters=[1]), "'parameters' of the input 'x' must be an object"),
        (tensor(parameters={"binary_data_size": 8}), "both 'data' and"),
        (orjson.dumps({"inputs": orjson.loads(tensor())["inputs"], "outputs": {}}), "list of"),
        (orjson.dumps({"inputs": orjson.loads(tensor())["inputs"], "id": 4}), "'id' must be"),
    ],
)
def test_bad_json_requests(body: bytes, match: str) -> None:
    if b'"data":null' in body:
        body = body.replace(b',"data":null', b"")
    with pytest.raises(InvalidRequestError, match=match):
        decode(body)


def test_uint64_above_int64_range_is_exact() -> None:
    request = decode(tensor(datatype="UINT64", data=[1, 2**64 - 1]))
    assert request.inference.inputs["x"].tolist() == [1, 2**64 - 1]


def binary_request(size: int, payload: bytes, datatype: str = "FP32") -> tuple[bytes, int, bytes]:
    """A one-input binary request: (JSON header, its length, the bytes after it)."""
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2],
                    "datatype": datatype,
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    )
    return header, len(header), payload


@pytest.mark.parametrize(
    ("size", "payload", "datatype", "match"),
    [
        (8, b"\0" * 4, "FP32", "truncated: input 'x' declares binary_data_size 8 but only 4"),
        (4, b"\0" * 4, "FP32", r"shape \[2\] float32 \(8 bytes\) but binary_data_size is 4"),
        (8, b"\0" * 12, "FP32", "4 bytes after the last tensor"),
        (-1, b"", "FP32", "must be a byte count"),
        (2, b"\x01\x02", "BOOL", "bytes other than 0 and 1"),
        (9, struct.pack("<I", 5) + b"abcde", "BYTES", r"ends after 1"),
        (6, struct.pack("<I", 5) + b"ab", "BYTES", "element 0 declares 5 bytes but only 2"),
        (12, (struct.pack("<I", 1) + b"a") * 2 + b"zz", "BYTES", "2 bytes after its 2 BYTES"),
    ],
)
def test_bad_binary_requests(size: int, payload: bytes, datatype: str, match: str) -> None:
    header, length, raw = binary_request(size, payload, datatype)
    with pytest.raises(InvalidRequestError, match=match):
        decode(header + raw, header_length=length)


@pytest.mark.parametrize("length", [0, 10_000, -3])
def test_header_length_outside_the_body(length: int) -> None:
    with pytest.raises(InvalidRequestError, match=f"Inference-Header-Content-Length is {length}"):
        decode(tensor(), header_length=length)


def test_binary_data_size_without_header_length() -> None:
    header, _, _ = binary_request(8, b"")
    with pytest.raises(InvalidRequestError, match="no Inference-Header-Content-Length"):
        decode(header)


def test_header_length_cutting_the_json() -> None:
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        decode(tensor(), header_length=5)


def test_non_utf8_bytes_output_needs_binary() -> None:
    response = InferenceResponse("m", None, {"y": np.array([b"\xff"], dtype=object)})
    with pytest.raises(InvalidRequestError, match="'y' holds bytes that are not UTF-8"):
        v2.encode_infer_response(response)
    assert v2.encode_infer_response(response, binary=True).header_length is not None


def test_unsupported_dtype_output() -> None:
    response = InferenceResponse("m", None, {"y": np.array([1j])})
    with pytest.raises(InvalidRequestError, match="complex128 has no V2 datatype"):
        v2.encode_infer_response(response)


# -- round trips --------------------------------------------------------------------------

SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


def arrays(datatype: str, *, finite: bool) -> st.SearchStrategy[np.ndarray]:
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        text = st.text(max_size=6).map(str.encode) if finite else st.binary(max_size=6)
        return SHAPES.flatmap(
            lambda shape: st.lists(
                text, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))
            ).map(lambda items: np.array([*items, b""], dtype=object)[:-1].reshape(shape))
        )
    elements = (
        {"allow_nan": False, "allow_infinity": False} if finite and dtype.kind == "f" else None
    )
    return hnp.arrays(dtype, SHAPES, elements=elements)


@settings(max_examples=20, deadline=None)
@given(data=st.data(), datatype=st.sampled_from(list(DATATYPES)), binary=st.booleans())
def test_request_round_trip(data: st.DataObject, datatype: str, binary: bool) -> None:
    array = data.draw(arrays(datatype, finite=not binary))
    other = np.arange(3, dtype=np.int32)
    encoded = v2.encode_infer_request(
        {"x": array, "other": other},
        binary={"x"} if binary else False,
        outputs={"y": True},
        request_id="r1",
    )
    request = decode(encoded.body, encoded.header_length)
    assert request.id == "r1"
    assert request.binary_outputs == frozenset({"y"})
    out = request.inference.inputs["x"]
    assert out.dtype == array.dtype
    assert out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    np.testing.assert_array_equal(request.inference.inputs["other"], other)


@settings(max_examples=20, deadline=None)
@given(data=st.data(), datatype=st.sampled_from(list(DATATYPES)), binary=st.booleans())
def test_response_round_trip(data: st.DataObject, datatype: str, binary: bool) -> None:
    array = data.draw(arrays(datatype, finite=not binary))
    encoded = v2.encode_infer_response(
        InferenceResponse("m", "1", {"y": array}), binary=binary, request_id="r"
    )
    decoded = v2.decode_infer_response(encoded.body, header_length=encoded.header_length)
    assert (decoded.model, decoded.version) == ("m", "1")
    out = decoded.outputs["y"]
    assert (out.dtype, out.shape) == (array.dtype, array.shape)
    np.testing.assert_array_equal(out, array)


# -- tritonclient -------------------------------------------------------------------------


def test_tritonclient_binary_request_and_response() -> None:
    import tritonclient.http as httpclient

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    words = np.array([[b"a", b"\xffbc"]], dtype=np.object_)
    flags = np.array([True, False])
    inputs = [
        httpclient.InferInput("x", list(x.shape), "FP32"),
        httpclient.InferInput("words", list(words.shape), "BYTES"),
        httpclient.InferInput("flags", list(flags.shape), "BOOL"),
    ]
    inputs[0].set_data_from_numpy(x, binary_data=True)
    inputs[1].set_data_from_numpy(words, binary_data=True)
    inputs[2].set_data_from_numpy(flags, binary_data=False)
    outputs = [
        httpclient.InferRequestedOutput("y", binary_data=True),
        httpclient.InferRequestedOutput("labels", binary_data=False),
    ]
    body, header_length = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id="7", parameters={"mode": "fast"}
    )
    request = decode(body, header_length)
    assert request.id == "7"
    assert request.inference.parameters == {"mode": "fast"}
    assert request.inference.outputs == ("y", "labels")
    assert request.binary == frozenset({"y"})
    np.testing.assert_array_equal(request.inference.inputs["x"], x)
    assert request.inference.inputs["words"].tolist() == words.tolist()
    np.testing.assert_array_equal(request.inference.inputs["flags"], flags)

    y = request.inference.inputs["x"] * 2
    labels = np.array([b"cat", b"dog"], dtype=object)
    encoded = v2.encode_infer_response(
        InferenceResponse("m", "1", {"y": y, "labels": labels}),
        request_id=request.id,
        binary=request.binary,
    )
    result = httpclient.InferResult.from_response_body(
        encoded.body, header_length=encoded.header_length
    )
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)
    assert result.as_numpy("labels").tolist() == ["cat", "dog"]  # JSON BYTES come back as str
    assert result.get_response()["id"] == "7"


def test_tritonclient_json_request_without_outputs_asks_for_binary() -> None:
    import tritonclient.http as httpclient

    x = np.array([1, 2, 3], dtype=np.int64)
    infer_input = httpclient.InferInput("x", [3], "INT64")
    infer_input.set_data_from_numpy(x, binary_data=False)
    body, header_length = httpclient.InferenceServerClient.generate_request_body([infer_input])
    assert header_length is None
    request = decode(body.encode() if isinstance(body, str) else body, header_length)
    assert request.binary is True
    encoded = v2.encode_infer_response(
        InferenceResponse("m", None, {"y": x + 1}), binary=request.binary
    )
    result = httpclient.InferResult.from_response_body(
        encoded.body, header_length=encoded.header_length
    )
    np.testing.assert_array_equal(result.as_numpy("y"), x + 1)
