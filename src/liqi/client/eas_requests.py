"""The request and response classes of the EAS Python SDK (``eas_prediction``), on liqi's codec.

Code written for ``eas_prediction`` ports by changing its import::

    from liqi import PredictClient, TFRequest      # was: from eas_prediction import ...

    request = TFRequest("serving_default")
    request.add_feed("images", [1, 784], TFRequest.DT_FLOAT, values)
    request.add_fetch("scores")
    response = client.predict(request)
    response.get_values("scores"), response.get_tensor_shape("scores")

The bytes on the wire are :mod:`liqi.protocols.eas`'s ``PredictRequest``/``PredictResponse``;
nothing here is a second encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from liqi.errors import InvalidRequestError
from liqi.protocols import eas

__all__ = ["StringRequest", "StringResponse", "TFRequest", "TFResponse"]

_DT = eas.ArrayDataType


class TFRequest:
    """A TensorFlow request for ``POST /api/predict/<service>`` (EAS's ``TFRequest``).

    Args:
        signature_name: the SavedModel signature to run; ``None`` runs the default one.
    """

    DT_FLOAT = int(_DT.DT_FLOAT)
    DT_DOUBLE = int(_DT.DT_DOUBLE)
    DT_INT8 = int(_DT.DT_INT8)
    DT_INT16 = int(_DT.DT_INT16)
    DT_INT32 = int(_DT.DT_INT32)
    DT_INT64 = int(_DT.DT_INT64)
    DT_UINT8 = int(_DT.DT_UINT8)
    DT_STRING = int(_DT.DT_STRING)
    DT_BOOL = int(_DT.DT_BOOL)

    def __init__(self, signature_name: str | None = None) -> None:
        self.signature_name = signature_name
        self.feeds: dict[str, npt.NDArray[Any]] = {}
        self.fetches: list[str] = []

    def set_signature_name(self, signature_name: str) -> None:
        self.signature_name = signature_name

    def add_feed(
        self, input_name: str, shape: Sequence[int], content_type: int, content: Any
    ) -> None:
        """Add an input: its shape, its ``DT_*`` type and its values (flat or nested).

        Raises:
            InvalidRequestError: the type is not one the protocol carries, or the number of
                values does not fit the shape.
        """
        dtype = eas.numpy_dtype(content_type)
        if dtype is None:
            raise InvalidRequestError(
                f"Input {input_name!r}: type {content_type!r} is not one TFRequest can carry. "
                "Use TFRequest.DT_FLOAT, DT_DOUBLE, DT_INT8/16/32/64, DT_UINT8, DT_STRING or "
                "DT_BOOL."
            )
        values = np.asarray(content, dtype=dtype)
        dims = [int(d) for d in shape]
        if values.size != int(np.prod(dims)):
            raise InvalidRequestError(
                f"Input {input_name!r} has shape {dims}, which needs {int(np.prod(dims))} "
                f"values, but {values.size} were given. Make the shape and the values agree."
            )
        self.feeds[input_name] = values.reshape(dims)

    def add_fetch(self, output_name: str) -> None:
        """Ask for one output (all of them when no fetch is added)."""
        self.fetches.append(output_name)

    def to_string(self) -> bytes:
        """The serialized ``PredictRequest``."""
        return eas.encode_predict_request(
            self.feeds, signature_name=self.signature_name or "", output_filter=self.fetches
        )


class TFResponse:
    """The answer to a :class:`TFRequest` (EAS's ``TFResponse``)."""

    def __init__(self, outputs: Mapping[str, npt.NDArray[Any]]) -> None:
        self.outputs: dict[str, npt.NDArray[Any]] = dict(outputs)

    @classmethod
    def from_bytes(cls, body: bytes) -> TFResponse:
        return cls(eas.decode_predict_response(body).outputs)

    def _output(self, output_name: str) -> npt.NDArray[Any]:
        try:
            return self.outputs[output_name]
        except KeyError:
            names = ", ".join(sorted(self.outputs)) or "none"
            raise KeyError(
                f"The response has no output {output_name!r}. Its outputs: {names}."
            ) from None

    def get_values(self, output_name: str) -> list[Any]:
        """The output's values, flat (row-major), as the SDK returns them."""
        values: list[Any] = self._output(output_name).ravel().tolist()
        return values

    def get_tensor_shape(self, output_name: str) -> list[int]:
        return list(self._output(output_name).shape)

    def get_array(self, output_name: str) -> npt.NDArray[Any]:
        """The output as an array of its shape (not in the EAS SDK)."""
        return self._output(output_name)


class StringRequest:
    """A raw body for a custom processor or a PMML service (EAS's ``StringRequest``)."""

    def __init__(self, request_data: str | bytes = b"") -> None:
        self.request_data = request_data

    def to_string(self) -> bytes:
        data = self.request_data
        return data.encode() if isinstance(data, str) else bytes(data)


class StringResponse:
    """The raw body a custom processor answered with."""

    def __init__(self, response_data: bytes = b"") -> None:
        self.response_data = response_data

    def to_string(self) -> bytes:
        return self.response_data

    def __str__(self) -> str:
        return self.response_data.decode("utf-8", "replace")
