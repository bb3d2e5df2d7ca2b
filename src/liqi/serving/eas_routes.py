"""EAS on the model server: ``POST /api/predict/<name>`` and the signature on ``GET``.

A body is, by the model's kind:

- custom processor (``python``): raw bytes to ``process``; its bytes and status come back;
- tensor model, JSON body (``Content-Type: application/json`` or a body starting with ``{``
  or ``[``): TF Serving's ``{"instances": ...}`` / ``{"inputs": ...}`` formats, a bare list
  meaning ``instances`` (EAS's ``[{"fea1": 1, "fea2": 2}]``); answered as TF Serving does;
- tensor model, anything else: a serialized ``tensorflow.eas.PredictRequest`` answered with a
  ``PredictResponse``.

Errors are answered as text with the HTTP status, as EAS does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from liqi.asgi.http import JSON, OCTET, Request, Response
from liqi.errors import MethodNotAllowedError
from liqi.protocols import eas
from liqi.protocols.tensors import select_outputs
from liqi.serving.loaders import RawServable
from liqi.serving.tfserving_routes import predict_json

if TYPE_CHECKING:
    from liqi.serving.app import ServingApp

_JSON_START = frozenset(b"{[")
_SPACE = b" \t\r\n"


async def handle(app: ServingApp, request: Request, name: str) -> Response:
    model = app.manager.get(name)
    timeout_s = app.limits.request_timeout_s
    if request.method == "GET":
        entry = model.resolve()
        servable, _ = entry.loaded(model.name)
        if isinstance(servable, RawServable):
            body = orjson.dumps({"name": model.name, "processor": servable.processor})
        else:
            sig = servable.signature(None)
            body = eas.signature_json(
                sig.name, list(sig.inputs.values()), list(sig.outputs.values())
            )
        return Response(200, body, model=model.name, version=str(entry.version))
    if request.method != "POST":
        raise MethodNotAllowedError(f"{request.path} takes POST (predict) or GET (signature).")
    with model.acquire() as entry:
        servable, runner = entry.loaded(model.name)
        version = str(entry.version)
        if isinstance(servable, RawServable):
            data, status = await runner.process(request.body, timeout_s=timeout_s)
            return Response(status, data, OCTET, model=model.name, version=version)
        if _is_json(request):
            body = request.body.lstrip(_SPACE)
            if body[:1] == b"[":
                body = b'{"instances":' + body + b"}"
            answer = await predict_json(entry, model.name, body, timeout_s=timeout_s)
            return Response(200, answer, JSON, model=model.name, version=version)
        request_pb = eas.decode_predict_request(request.body)
        outputs = await runner.infer(
            request_pb.inputs, request_pb.signature_name or None, timeout_s=timeout_s
        )
        outputs = select_outputs(outputs, request_pb.output_filter)
        answer = eas.encode_predict_response(outputs)
        return Response(200, answer, OCTET, model=model.name, version=version)


def _is_json(request: Request) -> bool:
    if request.header("content-type").startswith("application/json"):
        return True
    first = request.body.lstrip(_SPACE)[:1]
    return bool(first) and first[0] in _JSON_START
