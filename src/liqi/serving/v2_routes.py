"""Open Inference Protocol (KServe V2) on the model server, with Triton's binary tensors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from liqi._version import __version__
from liqi.asgi.http import OCTET, Request, Response
from liqi.errors import InvalidRequestError
from liqi.protocols import v2
from liqi.protocols.tensors import InferenceResponse, select_outputs
from liqi.serving.manager import ServedModel
from liqi.serving.tfserving_routes import require

if TYPE_CHECKING:
    from liqi.serving.app import ServingApp

EXTENSIONS = ("binary_tensor_data",)


async def handle(app: ServingApp, request: Request, route: v2.Route) -> Response:
    if route.verb in ("server_metadata", "live", "ready"):
        require(request, "GET")
        if route.verb == "server_metadata":
            return Response(200, v2.encode_server_metadata("liqi", __version__, EXTENSIONS))
        ok = True if route.verb == "live" else app.ready
        return Response(200 if ok else 503, v2.encode_health(route.verb, ok))
    assert route.model is not None
    model = app.manager.get(route.model)
    if route.verb == "model_ready":
        require(request, "GET")
        ok = _ready(model, route.version)
        return Response(200 if ok else 503, v2.encode_health("ready", ok), model=model.name)
    if route.verb == "model_metadata":
        require(request, "GET")
        entry = model.resolve(route.version)
        servable, _ = entry.tensor_model(model.name)
        sig = servable.signature(None)
        versions = [str(v.version) for v in model.available()]
        body = v2.encode_model_metadata(
            model.name,
            versions,
            servable.processor,
            list(sig.inputs.values()),
            list(sig.outputs.values()),
        )
        return Response(200, body, model=model.name, version=str(entry.version))
    require(request, "POST")
    header = request.header("inference-header-content-length")
    if header and not header.isdigit():
        raise InvalidRequestError(
            f"Inference-Header-Content-Length must be a number of bytes, received {header!r}."
        )
    with model.acquire(route.version) as entry:
        servable, runner = entry.tensor_model(model.name)
        decoded = v2.decode_infer_request(
            request.body, model=model.name, header_length=int(header) if header else None
        )
        inference = decoded.inference
        signature = inference.parameters.get("signature_name")
        if signature is not None and not isinstance(signature, str):
            raise InvalidRequestError("parameters.signature_name must be a string.")
        outputs = await runner.infer(
            inference.inputs, signature, timeout_s=app.limits.request_timeout_s
        )
        outputs = select_outputs(outputs, inference.outputs)
        encoded = v2.encode_infer_response(
            InferenceResponse(model.name, str(entry.version), outputs),
            request_id=decoded.id,
            binary=decoded.binary,
        )
        response = Response(200, encoded.body, model=model.name, version=str(entry.version))
        if encoded.header_length is not None:
            response.content_type = OCTET
            response.headers.append(
                (b"inference-header-content-length", str(encoded.header_length).encode())
            )
        return response


def _ready(model: ServedModel, version: str | None) -> bool:
    available = model.available()
    if version is None:
        return bool(available)
    return any(str(v.version) == version for v in available)
