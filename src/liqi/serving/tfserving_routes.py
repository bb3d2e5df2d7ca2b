"""TF Serving REST v1 on the model server: status, metadata, ``:predict``, ``:classify``,
``:regress``, with versions and labels in the path.

``:classify`` and ``:regress`` run the signature on the examples' features stacked into
columns (feature name = input name); signatures that take serialized ``tf.Example`` protos
are not supported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from liqi.asgi.http import Request, Response
from liqi.errors import InvalidRequestError, MethodNotAllowedError, NotFoundError
from liqi.protocols import tfserving
from liqi.protocols.tensors import InferenceResponse
from liqi.serving.loaders import RawServable, Servable
from liqi.serving.manager import LoadedVersion, ServedModel, VersionState

if TYPE_CHECKING:
    from liqi.serving.app import ServingApp


def require(request: Request, method: str) -> None:
    if request.method != method:
        raise MethodNotAllowedError(f"{request.path} takes {method}, not {request.method}.")


async def handle(app: ServingApp, request: Request, route: tfserving.Route) -> Response:
    model = app.manager.get(route.model)
    if route.verb == "status":
        require(request, "GET")
        return Response(200, _status(model, route.version), model=model.name)
    if route.verb == "metadata":
        require(request, "GET")
        entry = model.resolve(route.version, route.label)
        return _answer(entry, model, _metadata(model.name, entry))
    require(request, "POST")
    timeout_s = app.limits.request_timeout_s
    with model.acquire(route.version, route.label) as entry:
        if route.verb == "predict":
            body = await predict_json(entry, model.name, request.body, timeout_s=timeout_s)
            return _answer(entry, model, body)
        _, runner = entry.tensor_model(model.name)
        examples = tfserving.decode_examples(request.body, model=model.name)
        inputs = _stack(examples)
        outputs = await runner.infer(inputs, examples.signature, timeout_s=timeout_s)
        if route.verb == "classify":
            scores = _pick(outputs, "scores", route.verb)
            body = tfserving.encode_classify(scores, outputs.get("classes"))
        else:
            body = tfserving.encode_regress(_pick(outputs, "outputs", route.verb))
        return _answer(entry, model, body)


def _answer(entry: LoadedVersion, model: ServedModel, body: bytes) -> Response:
    return Response(200, body, model=model.name, version=str(entry.version))


async def predict_json(
    entry: LoadedVersion, model: str, body: bytes, *, timeout_s: float | None
) -> bytes:
    """A TF Serving ``:predict`` body run through ``entry``, answered in the same format (row
    or columnar); EAS's JSON bodies take this path too."""
    servable, runner = entry.tensor_model(model)
    decoded = tfserving.decode_predict(body, model=model)
    inference = decoded.inference
    inputs = name_unnamed(servable, inference.inputs, inference.signature)
    outputs = await runner.infer(inputs, inference.signature, timeout_s=timeout_s)
    response = InferenceResponse(model, str(entry.version), outputs)
    return tfserving.encode_predict(response, columnar=decoded.columnar)


def name_unnamed(
    servable: Servable, inputs: dict[str, np.ndarray], signature: str | None
) -> dict[str, np.ndarray]:
    """A bare tensor (no input names) goes to the signature's only input."""
    if tfserving.UNNAMED_INPUT not in inputs:
        return inputs
    sig = servable.signature(signature)
    if len(sig.inputs) != 1:
        raise InvalidRequestError(
            f"The request sends one unnamed tensor, but signature {sig.name!r} takes "
            f"{len(sig.inputs)} inputs ({', '.join(sorted(sig.inputs))}); name them."
        )
    [name] = sig.inputs
    return {name: inputs[tfserving.UNNAMED_INPUT]}


def _stack(examples: tfserving.ExamplesRequest) -> dict[str, np.ndarray]:
    names = set(examples.examples[0])
    for i, example in enumerate(examples.examples):
        if set(example) != names:
            raise InvalidRequestError(
                f"examples[{i}] has features {sorted(example)}, examples[0] has "
                f"{sorted(names)}; every example needs the same features."
            )
    columns: dict[str, np.ndarray] = {}
    for name in sorted(names):
        values = [example[name] for example in examples.examples]
        if any(len(v) != len(values[0]) for v in values):
            raise InvalidRequestError(f"Feature {name!r} has different lengths across examples.")
        stacked = np.stack(values)
        columns[name] = stacked[:, 0] if stacked.shape[1] == 1 else stacked
    for name, value in examples.context.items():
        columns[name] = np.repeat(value[None, ...], len(examples.examples), axis=0)
    return columns


def _pick(outputs: dict[str, np.ndarray], name: str, verb: str) -> np.ndarray:
    if name in outputs:
        return outputs[name]
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    raise InvalidRequestError(
        f":{verb} needs an output named {name!r}; the signature has {', '.join(sorted(outputs))}."
    )


def _status(model: ServedModel, version: str | None) -> bytes:
    entries = sorted(model.versions.values(), key=lambda v: v.version, reverse=True)
    if version is not None:
        entries = [e for e in entries if str(e.version) == version]
        if not entries:
            raise NotFoundError(f"Model {model.name!r} has no version {version}.")
    rows = []
    for e in entries:
        state = "END" if e.state is VersionState.FAILED else e.state.value
        rows.append((str(e.version), state, e.error))
    return tfserving.encode_status(rows)


def _metadata(name: str, entry: LoadedVersion) -> bytes:
    servable = entry.servable
    if servable is None or isinstance(servable, RawServable):
        raise InvalidRequestError(f"Model {name!r} is a custom processor: it has no signatures.")
    signatures = {
        key: (list(sig.inputs.values()), list(sig.outputs.values()))
        for key, sig in servable.signatures.items()
    }
    return tfserving.encode_metadata(name, str(entry.version), signatures)
