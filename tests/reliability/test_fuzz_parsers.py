"""liqi's parsers and codecs fuzzed with hypothesis: whatever bytes, text or JSON-like value
they get, they return or raise one of liqi's own errors (liqi.errors.LiqiError, which the
servers turn into a 4xx) — never an IndexError, KeyError, TypeError, UnicodeDecodeError,
struct.error, RecursionError... which would be a 500 or a crashed CLI.

Besides random input, each parser gets near-valid input: a document it accepts with one
field replaced, removed or added, or a valid encoding with some bytes changed. Examples are
derandomized (the same on every run); failures found once are kept as ``@example``."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from liqi.core import odps, pai_command, refs, service_spec
from liqi.errors import LiqiError
from liqi.protocols import eas, eas_predict_pb2, tfserving, v2

pytestmark = pytest.mark.timeout(180)

T = TypeVar("T")
pb: Any = eas_predict_pb2

fuzz = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def only_liqi_errors(parse: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``parse(*args)``'s result, or None when it refused the input with a LiqiError; any
    other exception fails the test."""
    try:
        return parse(*args, **kwargs)
    except LiqiError as exc:
        refused = exc
    assert str(refused), f"{type(refused).__name__} with no message"
    return None


# -- strategies -----------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def dumps(value: Any) -> bytes:
    """JSON bytes for any ``json_values`` value (integers past 64 bits included)."""
    return json.dumps(value).encode()


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document: dict keys and list indexes, outermost first."""
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += paths(inner, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> Any:
    """A valid document with one place replaced by any JSON value, removed, or given an
    extra key."""
    document = copy.deepcopy(draw(documents))
    where = draw(st.sampled_from(paths(document)))
    if not where:
        return draw(json_values)
    parent = document
    for step in where[:-1]:
        parent = parent[step]
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    if action == "replace":
        parent[where[-1]] = draw(json_values)
    elif action == "remove":
        del parent[where[-1]]
    elif isinstance(parent[where[-1]], dict):
        parent[where[-1]][draw(st.text(max_size=12))] = draw(json_values)
    else:
        parent[where[-1]] = [parent[where[-1]], draw(json_values)]
    return document


@st.composite
def damaged(draw: st.DrawFn, encodings: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with bytes flipped, cut off, inserted or removed."""
    body = bytearray(draw(encodings))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, len(body)))
        if action == "flip" and at < len(body):
            body[at] = draw(st.integers(0, 255))
        elif action == "truncate":
            del body[at:]
        elif action == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif at < len(body):
            del body[at : at + draw(st.integers(1, 8))]
    return bytes(body)


names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=10)
shapes = st.lists(st.integers(0, 4), max_size=3)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    shape = tuple(draw(shapes))
    dtype = draw(
        st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint8, np.int8, np.bool_])
    )
    size = int(np.prod(shape))
    if draw(st.booleans()):  # a string tensor: an object array of bytes
        strings = draw(st.lists(st.binary(max_size=5), min_size=size, max_size=size))
        array = np.empty(size, dtype=object)
        array[:] = strings
        return array.reshape(shape)
    values = draw(st.lists(st.integers(0, 100), min_size=size, max_size=size))
    return np.array(values, dtype=np.int64).astype(dtype).reshape(shape)


tensors = st.dictionaries(names, arrays(), min_size=1, max_size=3)


# -- EAS protobuf -----------------------------------------------------------------------------

eas_requests = tensors.map(eas.encode_predict_request)
eas_responses = tensors.map(eas.encode_predict_response)


@st.composite
def eas_protos(draw: st.DrawFn) -> bytes:
    """A PredictRequest built field by field: any dtype number, any shape, any values."""
    request = pb.PredictRequest(signature_name=draw(st.text(max_size=8)))
    for name in draw(st.lists(st.text(max_size=6), max_size=3)):
        proto = request.inputs[name]
        proto.dtype = draw(st.integers(-(2**31), 2**31 - 1))
        proto.array_shape.dim.extend(
            draw(st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(-2, 4), max_size=4))
        )
        proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=4)))
        proto.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4)))
        proto.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)))
        proto.string_val.extend(draw(st.lists(st.binary(max_size=6), max_size=4)))
        proto.bool_val.extend(draw(st.lists(st.booleans(), max_size=4)))
    request.output_filter.extend(draw(st.lists(st.text(max_size=6), max_size=2)))
    data: bytes = request.SerializeToString()
    return data


@fuzz
@given(body=st.binary(max_size=200) | damaged(eas_requests) | eas_protos())
def test_the_eas_codec_decodes_any_body_or_refuses_it_with_a_liqi_error(body: bytes) -> None:
    only_liqi_errors(eas.decode_predict_request, body)
    only_liqi_errors(eas.decode_predict_response, body)


@fuzz
@given(body=damaged(eas_responses))
def test_the_eas_client_decodes_any_damaged_response_or_refuses_it(body: bytes) -> None:
    only_liqi_errors(eas.decode_predict_response, body)


# -- TF Serving JSON ----------------------------------------------------------------------------

tf_rows = st.fixed_dictionaries(
    {"instances": st.lists(st.lists(st.floats(-10, 10), min_size=2, max_size=2), min_size=1)}
)
tf_columns = st.fixed_dictionaries(
    {
        "signature_name": st.just("serving_default"),
        "inputs": st.fixed_dictionaries(
            {
                "x": st.lists(st.integers(0, 9), min_size=1, max_size=3),
                "b": st.just({"b64": "AAE="}),
            }
        ),
    }
)
tf_examples = st.fixed_dictionaries(
    {
        "context": st.just({"c": 1}),
        "examples": st.lists(
            st.fixed_dictionaries({"f": st.floats(-1, 1), "s": st.text(max_size=4)}), min_size=1
        ),
    }
)
tf_documents = tf_rows | tf_columns | tf_examples


@fuzz
@given(
    body=st.binary(max_size=200)
    | json_values.map(dumps)
    | mutated(tf_documents).map(dumps)
    | damaged(tf_documents.map(dumps))
)
# a feature past float32's range became inf with a RuntimeWarning (an error under -W error)
@example(body=b'{"examples": [{"f": 1e300}]}')
def test_tf_serving_json_decodes_any_body_or_refuses_it_with_a_liqi_error(body: bytes) -> None:
    only_liqi_errors(tfserving.decode_predict, body, model="m")
    only_liqi_errors(tfserving.decode_examples, body, model="m", version="1")


@fuzz
@given(
    path=st.text(max_size=60)
    | st.from_regex(
        r"/v1/models/[^/]{0,8}(/(versions|labels)/.{0,6})?(:\w{0,9}|/metadata)?", fullmatch=True
    )
)
def test_tf_serving_paths_parse_or_are_refused_with_a_liqi_error(path: str) -> None:
    only_liqi_errors(tfserving.parse_path, path)
    only_liqi_errors(v2.parse_path, path.replace("/v1/", "/v2/", 1))


# -- KServe V2 JSON and binary ------------------------------------------------------------------


@st.composite
def v2_bodies(draw: st.DrawFn) -> tuple[bytes, int | None]:
    inputs = draw(tensors)
    binary = draw(st.booleans() | st.sets(st.sampled_from(sorted(inputs))))
    outputs = draw(st.none() | st.dictionaries(names, st.booleans(), max_size=2))
    try:
        encoded = v2.encode_infer_request(inputs, binary=binary, outputs=outputs, request_id="r")
    except LiqiError:  # bytes that are not UTF-8 travel only in binary
        encoded = v2.encode_infer_request(inputs, binary=True, outputs=outputs, request_id="r")
    return encoded.body, encoded.header_length


@st.composite
def v2_damaged(draw: st.DrawFn) -> tuple[bytes, int | None]:
    body, header_length = draw(v2_bodies())
    if header_length is None:
        document = orjson.loads(body)
        return dumps(draw(mutated(st.just(document)))), None
    header = orjson.loads(body[:header_length])
    if draw(st.booleans()):
        new_header = dumps(draw(mutated(st.just(header))))
        body, header_length = new_header + body[header_length:], len(new_header)
    else:
        body = draw(damaged(st.just(body)))
    return body, draw(st.just(header_length) | st.integers(-5, len(body) + 5))


@fuzz
@given(
    request=st.tuples(st.binary(max_size=200), st.none() | st.integers(-5, 205))
    | st.tuples(json_values.map(dumps), st.none())
    | v2_damaged()
)
# a datatype that is not a string was looked up in a dict: TypeError (unhashable list)
@example(request=(b'{"inputs":[{"name":"0","datatype":[],"shape":[],"data":[0.0]}]}', None))
def test_kserve_v2_decodes_any_body_or_refuses_it_with_a_liqi_error(
    request: tuple[bytes, int | None],
) -> None:
    body, header_length = request
    only_liqi_errors(v2.decode_infer_request, body, model="m", header_length=header_length)
    only_liqi_errors(v2.decode_infer_response, body, header_length=header_length)


# -- PAI commands ---------------------------------------------------------------------------------

PAI_WORDS = [
    "pai",
    "-name",
    "tensorflow1120",
    "tensorflow",
    "-project",
    "algo_public",
    "-Dscript=file:///tmp/train.py",
    "-Dscript=odps://p/resources/a.tar.gz",
    "-DentryFile=train.py",
    '-Dcluster={"ps":{"count":1},"worker":{"count":2}}',
    "-Dcluster=",
    "-DgpuRequired=100",
    "-DuserDefinedParameters='--a=1 --b=\"x y\"'",
    "-Dtables=odps://p/volumes/v/p1",
    "-DcheckpointDir=oss://bucket/ckpt/",
    "-DhyperParameters=file:///tmp/h.txt",
    "-Darn=acs:ram::1:role/x",
    "-DossHost=oss.example.com",
    "-Dbuckets=oss://bucket/",
    ";",
    "'",
    '"',
    "\\",
    "\n",
    "--",
    "#",
    "-D",
    "-Dx",
    "=",
]
pai_texts = st.lists(st.sampled_from(PAI_WORDS) | st.text(max_size=10), max_size=12).map(" ".join)


@fuzz
@given(text=st.text(max_size=200) | pai_texts)
def test_pai_commands_parse_or_are_refused_with_a_liqi_error(text: str) -> None:
    only_liqi_errors(pai_command.parse_pai_text, text)
    only_liqi_errors(pai_command.is_complete, text)
    words = only_liqi_errors(pai_command.tokenize, text)
    if words is not None:
        only_liqi_errors(pai_command.parse_pai, words)
    only_liqi_errors(pai_command.parse_hyper_parameters, text, "h.txt")


cluster_documents = st.fixed_dictionaries(
    {"ps": st.just({"count": 1, "cpu": 100}), "worker": st.just({"count": 2, "memory": 2000})}
)


@fuzz
@given(
    value=st.text(max_size=80)
    | json_values.map(lambda v: dumps(v).decode())
    | mutated(cluster_documents).map(lambda v: dumps(v).decode())
    | st.integers(0, 5000).map(lambda n: "[" * n + "]" * n)
)
def test_cluster_json_parses_or_is_refused_with_a_liqi_error(value: str) -> None:
    only_liqi_errors(pai_command.parse_cluster, value)


# -- the EAS service spec ------------------------------------------------------------------------

SPEC = {
    "name": "mnist",
    "generate_token": "false",
    "model_path": "oss://mybucket/models/",
    "processor": "tensorflow_cpu",
    "token": "abc",
    "autoscaler": {"min": 1, "max": 3, "strategies": {"qps": 10}},
    "metadata": {
        "instance": 1,
        "cpu": 1,
        "memory": 2000,
        "rpc": {"batching": True, "max_batch_size": 16, "max_batch_timeout": 50},
        "rolling_strategy": {"max_surge": 1, "max_unavailable": 1},
    },
}


@fuzz
@given(document=json_values | mutated(st.just(SPEC)) | mutated(mutated(st.just(SPEC))))
def test_service_specs_parse_or_are_refused_with_a_liqi_error(document: Any) -> None:
    body = dumps(document)
    loaded = only_liqi_errors(service_spec.load_document, body)
    if loaded is not None:
        only_liqi_errors(service_spec.parse_service_spec, loaded)
        only_liqi_errors(service_spec.merge_documents, SPEC, loaded)
    if isinstance(document, dict):
        only_liqi_errors(service_spec.parse_service_spec, document)


@fuzz
@given(body=st.binary(max_size=200) | st.text(max_size=100))
def test_service_json_loads_or_is_refused_with_a_liqi_error(body: bytes | str) -> None:
    only_liqi_errors(service_spec.load_document, body)


# -- odps:// and oss:// --------------------------------------------------------------------------

uri_parts = st.sampled_from(
    [
        "odps:",
        "oss:",
        "//",
        "/",
        "p",
        "algo_public",
        "resources",
        "volumes",
        "mnist",
        "train",
        "a.tar.gz",
        "?",
        "&",
        "=",
        "role_arn",
        "host",
        "%",
        "%2F",
        "..",
        ".",
        "#",
        "@",
        ":",
        " ",
    ]
)
uris = st.lists(uri_parts | st.text(max_size=6), max_size=12).map("".join)


@fuzz
@given(text=st.text(max_size=80) | uris)
# urlsplit raised ValueError ("Invalid IPv6 URL") on an unbalanced bracket
@example(text="oss://[")
@example(text="oss://a]/b")
def test_odps_and_oss_uris_parse_or_are_refused_with_a_liqi_error(text: str) -> None:
    only_liqi_errors(odps.parse_odps_uri, text)
    only_liqi_errors(odps.parse_resource_uri, text)
    only_liqi_errors(odps.parse_volume_uri, text)
    only_liqi_errors(refs.parse_oss_uri, text)
