"""Sans-IO codecs for the model server's wire protocols.

Each module turns request bytes (and the few HTTP facts a protocol needs: the path, a header
value) into the protocol-neutral :class:`~liqi.protocols.tensors.InferenceRequest`, and an
:class:`~liqi.protocols.tensors.InferenceResponse` back into response bytes. Nothing here opens
a socket, knows about ASGI or imports TensorFlow; bad input raises
:class:`~liqi.errors.InvalidRequestError` naming the offending input.

- :mod:`liqi.protocols.tensors`: the shared request/response types and JSON helpers.
- :mod:`liqi.protocols.tfserving`: TensorFlow Serving REST v1 (``/v1/models/...``).
- :mod:`liqi.protocols.v2`: Open Inference Protocol / KServe V2 (``/v2/...``), with Triton's
  binary tensor extension.
"""
