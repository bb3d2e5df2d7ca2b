"""EAS TensorFlow protocol: PredictRequest/PredictResponse codec, signature JSON, auth."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from liqi.errors import InvalidRequestError, LiqiError, RequestExpiredError
from liqi.protocols import eas, eas_predict_pb2, eas_signature
from liqi.protocols.tensors import TensorSpec

pb: Any = eas_predict_pb2

NUMERIC_DTYPES = [
    np.float32,
    np.float64,
    np.int32,
    np.uint8,
    np.int16,
    np.int8,
    np.int64,
    np.bool_,
]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)
TOKEN = "YTg2ZjE0ZjM4ZmE3OTc0NzYxZDMwNjBiMTQ3MmU5NTUwMTM1NDVmNA=="
PATH = "/api/predict/mnist_saved_model_example"
DATE = "Mon, 02 Jan 2006 15:04:05 GMT"
SIGNED_AT = datetime(2006, 1, 2, 15, 4, 5, tzinfo=timezone.utc)
CONTENT_TYPE = "application/octet-stream"
NOT_A_REQUEST = re.escape("not a valid tensorflow.eas.PredictRequest")


def _assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


# -- the .proto matches the EAS SDKs' tf_predict.proto -----------------------------------


def test_messages_have_the_sdk_package_names_and_field_numbers() -> None:
    def fields(message: Any) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}

    assert pb.DESCRIPTOR.package == "tensorflow.eas"
    assert fields(pb.ArrayShape) == {"dim": 1}
    assert fields(pb.ArrayProto) == {
        "dtype": 1,
        "array_shape": 2,
        "float_val": 3,
        "double_val": 4,
        "int_val": 5,
        "string_val": 6,
        "int64_val": 7,
        "bool_val": 8,
    }
    assert fields(pb.PredictRequest) == {
        "signature_name": 1,
        "inputs": 2,
        "output_filter": 3,
        "debug_level": 100,
    }
    assert fields(pb.PredictResponse) == {"outputs": 1}
    assert pb.PredictRequest.DESCRIPTOR.full_name == "tensorflow.eas.PredictRequest"


def test_array_data_type_matches_the_generated_enum_and_tf_numbers() -> None:
    generated = {v.name: v.number for v in pb.ArrayDataType.DESCRIPTOR.values}
    assert generated == {dt.name: dt.value for dt in eas.ArrayDataType}
    assert (pb.DT_FLOAT, pb.DT_STRING, pb.DT_INT64, pb.DT_BOOL, pb.DT_HALF) == (1, 7, 9, 10, 19)


def test_a_request_built_like_the_eas_demo_decodes() -> None:
    # pai-eas/demo tensorflow_vpc/demo.py, with the generated classes.
    req = pb.PredictRequest()
    req.signature_name = "predict_images"
    req.inputs["images"].dtype = pb.DT_FLOAT
    req.inputs["images"].array_shape.dim.extend([1, 784])
    req.inputs["images"].float_val.extend([0.5] * 784)
    req.output_filter.append("scores")

    decoded = eas.decode_predict_request(req.SerializeToString())

    assert decoded.signature_name == "predict_images"
    assert decoded.output_filter == ("scores",)
    assert list(decoded.inputs) == ["images"]
    _assert_same(decoded.inputs["images"], np.full((1, 784), 0.5, dtype=np.float32))


def test_our_response_parses_with_the_generated_classes() -> None:
    body = eas.encode_predict_response({"scores": np.array([[0.25, 0.75]], dtype=np.float32)})

    resp = pb.PredictResponse.FromString(body)

    assert resp.outputs["scores"].dtype == pb.DT_FLOAT
    assert list(resp.outputs["scores"].array_shape.dim) == [1, 2]
    assert list(resp.outputs["scores"].float_val) == [0.25, 0.75]


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES, ids=lambda d: np.dtype(d).name)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_request_round_trip_every_numeric_dtype(dtype: Any, data: st.DataObject) -> None:
    array = data.draw(hnp.arrays(np.dtype(dtype), SHAPES))

    decoded = eas.decode_predict_request(eas.encode_predict_request({"x": array}))

    _assert_same(decoded.inputs["x"], array)
    assert decoded.signature_name == ""
    assert decoded.output_filter == ()


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES, ids=lambda d: np.dtype(d).name)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_response_round_trip_every_numeric_dtype(dtype: Any, data: st.DataObject) -> None:
    arrays = {
        "a": data.draw(hnp.arrays(np.dtype(dtype), SHAPES)),
        "b": data.draw(hnp.arrays(np.dtype(dtype), SHAPES)),
    }

    outputs = eas.decode_predict_response(eas.encode_predict_response(arrays)).outputs

    assert sorted(outputs) == ["a", "b"]
    for name, array in arrays.items():
        _assert_same(outputs[name], array)


@settings(max_examples=50, deadline=None)
@given(
    shape=SHAPES,
    data=st.data(),
    signature=st.text(max_size=20),
    output_filter=st.lists(st.text(min_size=1, max_size=10), max_size=3),
)
def test_string_tensors_round_trip_as_bytes(
    shape: tuple[int, ...], data: st.DataObject, signature: str, output_filter: list[str]
) -> None:
    count = int(np.prod(shape))
    values = data.draw(st.lists(st.binary(max_size=12), min_size=count, max_size=count))
    flat = np.empty(count, dtype=object)
    flat[:] = values
    array = flat.reshape(shape)

    body = eas.encode_predict_request(
        {"s": array}, signature_name=signature, output_filter=output_filter
    )
    decoded = eas.decode_predict_request(body)

    _assert_same(decoded.inputs["s"], array)
    assert all(type(v) is bytes for v in decoded.inputs["s"].ravel())
    assert decoded.signature_name == signature
    assert decoded.output_filter == tuple(output_filter)


def test_str_and_fixed_width_string_arrays_are_sent_as_utf8_bytes() -> None:
    body = eas.encode_predict_request(
        {
            "u": np.array(["héllo", "w"]),
            "s": np.array([b"ab", b"c"]),
            "o": np.array(["x", b"y"], dtype=object),
        }
    )

    inputs = eas.decode_predict_request(body).inputs

    assert inputs["u"].tolist() == ["héllo".encode(), b"w"]
    assert inputs["s"].tolist() == [b"ab", b"c"]
    assert inputs["o"].tolist() == [b"x", b"y"]


def test_several_inputs_and_output_filter_survive() -> None:
    body = eas.encode_predict_request(
        {"images": np.zeros((2, 3), np.float32), "keep_prob": np.float64(0.5)},
        signature_name="serving_default",
        output_filter=["scores", "classes"],
    )

    decoded = eas.decode_predict_request(body)

    assert decoded.signature_name == "serving_default"
    assert decoded.output_filter == ("scores", "classes")
    _assert_same(decoded.inputs["images"], np.zeros((2, 3), np.float32))
    _assert_same(decoded.inputs["keep_prob"], np.array(0.5))
    neutral = decoded.to_inference_request("mnist", "2")
    assert (neutral.model, neutral.version, neutral.signature) == ("mnist", "2", "serving_default")
    assert neutral.outputs == ("scores", "classes")


def test_no_signature_or_filter_becomes_none_in_the_neutral_request() -> None:
    decoded = eas.decode_predict_request(eas.encode_predict_request({"x": np.ones(1)}))

    neutral = decoded.to_inference_request("m")

    assert neutral.signature is None
    assert neutral.outputs is None


# -- bad input ----------------------------------------------------------------------------


def _good_body() -> bytes:
    return eas.encode_predict_request(
        {"images": np.arange(12, dtype=np.float32).reshape(3, 4)}, output_filter=["scores"]
    )


def test_empty_body_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="body is empty"):
        eas.decode_predict_request(b"")


@pytest.mark.parametrize("keep", [1, 10, -1, -5])
def test_truncated_protobuf_is_refused(keep: int) -> None:
    body = _good_body()

    with pytest.raises(InvalidRequestError, match=NOT_A_REQUEST):
        eas.decode_predict_request(body[:keep])


def test_random_bytes_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match=NOT_A_REQUEST):
        eas.decode_predict_request(b"\xff\xfe\xfd\xfc garbage \x00\x01")


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=64))
def test_any_bytes_decode_or_raise_invalid_request(body: bytes) -> None:
    try:
        decoded = eas.decode_predict_request(body)
    except InvalidRequestError:
        return  # the only exception allowed
    for array in decoded.inputs.values():
        assert isinstance(array, np.ndarray)
        assert array.size == int(np.prod(array.shape))


def _request_with(name: str = "images", **fields: Any) -> bytes:
    req = pb.PredictRequest()
    proto = req.inputs[name]
    for key, value in fields.items():
        if key == "dim":
            proto.array_shape.dim.extend(value)
        elif isinstance(value, list):
            getattr(proto, key).extend(value)
        else:
            setattr(proto, key, value)
    return bytes(req.SerializeToString())


def test_shape_not_matching_the_value_count_names_the_input() -> None:
    body = _request_with(dtype=pb.DT_FLOAT, dim=[2, 784], float_val=[0.0] * 784)

    with pytest.raises(InvalidRequestError) as info:
        eas.decode_predict_request(body)

    message = info.value.message
    assert "'images'" in message
    assert "[2, 784]" in message
    assert "1568" in message
    assert "784" in message


def test_values_in_the_wrong_field_are_pointed_out() -> None:
    body = _request_with(dtype=pb.DT_FLOAT, dim=[2], double_val=[1.0, 2.0])

    with pytest.raises(InvalidRequestError, match="found in double_val"):
        eas.decode_predict_request(body)


@pytest.mark.parametrize("number", [42, 255])
def test_unknown_dtype_enum_value_is_refused(number: int) -> None:
    # proto3 enums are open: a newer or broken client can send any number.
    body = _request_with(dtype=number, dim=[1], float_val=[1.0])

    with pytest.raises(InvalidRequestError, match=f"dtype {number}, which is not"):
        eas.decode_predict_request(body)


@pytest.mark.parametrize(
    ("number", "name"), [(0, "DT_INVALID"), (19, "DT_HALF"), (8, "DT_COMPLEX64")]
)
def test_dtypes_without_a_value_field_are_refused(number: int, name: str) -> None:
    body = _request_with(dtype=number, dim=[1], float_val=[1.0])

    with pytest.raises(InvalidRequestError, match=f"'images' has dtype {name}") as info:
        eas.decode_predict_request(body)
    assert "DT_FLOAT" in info.value.message  # says what to use instead


def test_negative_dimension_is_refused() -> None:
    body = _request_with(dtype=pb.DT_FLOAT, dim=[-1, 2], float_val=[1.0, 2.0])

    with pytest.raises(InvalidRequestError, match=r"shape \[-1, 2\]"):
        eas.decode_predict_request(body)


def test_small_int_values_out_of_range_are_refused() -> None:
    body = _request_with(dtype=pb.DT_UINT8, dim=[2], int_val=[7, 300])

    with pytest.raises(InvalidRequestError, match=r"DT_UINT8 but holds values from 7 to 300"):
        eas.decode_predict_request(body)


def test_unsupported_numpy_dtype_in_a_request_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="'x' has numpy dtype float16"):
        eas.encode_predict_request({"x": np.ones(2, np.float16)})


def test_non_string_object_in_a_string_tensor_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="'x' is a string tensor but holds a int"):
        eas.encode_predict_request({"x": np.array([b"a", 3], dtype=object)})


def test_unsupported_output_dtype_is_a_server_error() -> None:
    with pytest.raises(LiqiError, match="'probs' has numpy dtype uint32") as info:
        eas.encode_predict_response({"probs": np.ones(2, np.uint32)})
    assert not isinstance(info.value, InvalidRequestError)
    assert info.value.http_status == 500


# -- signature JSON (B8) ------------------------------------------------------------------


def test_signature_json_matches_the_reference_example() -> None:
    body = eas.signature_json(
        "serving_default",
        inputs=[TensorSpec("flatten_input", np.dtype(np.float32), (None, 28, 28))],
        outputs=[TensorSpec("dense_1", np.dtype(np.float32), (-1, 10))],
    )

    assert orjson.loads(body) == {
        "signature_name": "serving_default",
        "inputs": [{"name": "flatten_input", "shape": [-1, 28, 28], "type": "DT_FLOAT"}],
        "outputs": [{"name": "dense_1", "shape": [-1, 10], "type": "DT_FLOAT"}],
    }


def test_signature_json_names_every_dtype() -> None:
    specs = [
        TensorSpec("s", np.dtype(object), (None,)),
        TensorSpec("i", np.dtype(np.int64), ()),
        TensorSpec("b", np.dtype(np.bool_), (3,)),
        TensorSpec("h", np.dtype(np.float16), None),
    ]

    document = eas.signature_document("sig", inputs=specs, outputs=[])

    assert [(d["type"], d["shape"]) for d in document["inputs"]] == [
        ("DT_STRING", [-1]),
        ("DT_INT64", []),
        ("DT_BOOL", [3]),
        ("DT_HALF", None),
    ]


# -- authorization ------------------------------------------------------------------------


def _sdk_authorization(token: str, body: bytes, *, md5_hex: str | None = None) -> str:
    """What eas-python-sdk's PredictClient sends (reference B7), written out independently."""
    content_md5 = md5_hex if md5_hex is not None else hashlib.md5(body).hexdigest()
    auth = "POST\n" + content_md5 + "\n" + CONTENT_TYPE + "\n" + DATE + "\n" + PATH
    digest = hmac.new(token.encode("utf-8"), auth.encode("utf-8"), hashlib.sha1).digest()
    return "EAS " + base64.b64encode(digest).decode()


def _check(header: str | None, **changes: Any) -> bool:
    request: dict[str, Any] = {
        "token": TOKEN,
        "method": "POST",
        "body": _good_body(),
        "content_type": CONTENT_TYPE,
        "date": DATE,
        "path": PATH,
        "now": SIGNED_AT,
    }
    request.update(changes)
    return eas_signature.check_authorization(header, **request)


def _body_with_leading_zero_md5() -> bytes:
    for i in itertools.count():
        body = b"request-%d" % i
        if hashlib.md5(body).hexdigest().startswith("0"):
            return body
    raise AssertionError("unreachable")  # pragma: no cover


def test_python_sdk_signature_is_accepted() -> None:
    assert _check(_sdk_authorization(TOKEN, _good_body()))


def test_java_sdk_md5_without_leading_zeros_is_accepted() -> None:
    body = _body_with_leading_zero_md5()
    java_md5 = format(int.from_bytes(hashlib.md5(body).digest(), "big"), "x")
    assert java_md5 != hashlib.md5(body).hexdigest()  # the case that matters

    assert _check(_sdk_authorization(TOKEN, body, md5_hex=java_md5), body=body)
    assert _check(_sdk_authorization(TOKEN, body), body=body)


def test_sign_request_makes_headers_the_check_accepts() -> None:
    body = _good_body()

    headers = eas_signature.sign_request(token=TOKEN, body=body, date=DATE, path=PATH)

    assert headers["Authorization"] == _sdk_authorization(TOKEN, body)
    assert headers["Content-MD5"] == hashlib.md5(body).hexdigest()
    assert headers["Content-Type"] == CONTENT_TYPE
    assert _check(headers["Authorization"], body=body)


@pytest.mark.parametrize(
    "change",
    [
        {"body": _good_body() + b"\x00"},
        {"date": "Mon, 02 Jan 2006 15:04:06 GMT"},
        {"path": "/api/predict/other_service"},
        {"content_type": "application/json"},
        {"method": "PUT"},
        {"token": TOKEN + "x"},
    ],
    ids=["body", "date", "path", "content_type", "method", "token"],
)
def test_tampered_signed_request_is_rejected(change: dict[str, Any]) -> None:
    header = _sdk_authorization(TOKEN, _good_body())

    assert _check(header)
    assert not _check(header, **change)


def test_signature_made_with_another_token_is_rejected() -> None:
    assert not _check(_sdk_authorization("not-the-token", _good_body()))


def test_raw_token_is_accepted() -> None:
    assert _check(TOKEN)
    assert _check(f"  {TOKEN} ")


@pytest.mark.parametrize(
    "header",
    [None, "", "wrong", TOKEN[:-1], f"Bearer {TOKEN}", f"EAS {TOKEN}", "EAS ", "EAS !!!"],
)
def test_wrong_or_missing_credentials_are_rejected(header: str | None) -> None:
    assert not _check(header)


def test_empty_token_authorizes_nothing() -> None:
    assert not _check("", token="")
    assert not _check(_sdk_authorization("", _good_body()), token="")


@pytest.mark.parametrize(
    ("server_minus_date", "fresh"),
    [
        (timedelta(0), True),
        (timedelta(minutes=14), True),
        (timedelta(minutes=-14), True),
        (timedelta(hours=8), True),  # a date 8 h behind: the local time of UTC-8...
        (timedelta(hours=-8), True),  # ...or 8 h ahead: the local time of UTC+8
        (timedelta(hours=12, minutes=14), True),
        (timedelta(hours=-14, minutes=-14), True),
        (timedelta(hours=12, minutes=16), False),
        (timedelta(hours=-14, minutes=-16), False),
        (timedelta(days=2), False),
        (timedelta(days=-2), False),
    ],
)
def test_signed_date_must_be_fresh(server_minus_date: timedelta, fresh: bool) -> None:
    header = _sdk_authorization(TOKEN, _good_body())
    now = SIGNED_AT + server_minus_date
    if fresh:
        assert _check(header, now=now)
    else:
        with pytest.raises(RequestExpiredError) as caught:
            _check(header, now=now)
        assert DATE in caught.value.message


def test_unreadable_date_of_a_signed_request_is_refused() -> None:
    body = _good_body()
    for date in ("", "yesterday", "Mon, 99 Foo 2006 15:04:05 GMT"):
        header = eas_signature.sign_request(token=TOKEN, body=body, date=date, path=PATH)[
            "Authorization"
        ]
        with pytest.raises(RequestExpiredError):
            _check(header, body=body, date=date)


def test_raw_token_needs_no_date() -> None:
    assert _check(TOKEN, date="", now=SIGNED_AT + timedelta(days=30))
