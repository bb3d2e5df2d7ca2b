"""`liqi predict NAME --endpoint URL --input FILE`: one prediction from the command line."""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.cli.output import echo_json, table
from liqi.errors import InvalidRequestError

if TYPE_CHECKING:
    import numpy as np

    from liqi.client.signatures import Signature

# numpy, protobuf and the client are imported inside the command: other commands stay fast.

_NPY_MAGIC = b"\x93NUMPY"


@click.command()
@click.argument("name")
@click.option(
    "--endpoint",
    envvar="LIQI_PREDICT_ENDPOINT",
    required=True,
    help="The model server, e.g. http://127.0.0.1:8501 [env LIQI_PREDICT_ENDPOINT].",
)
@click.option(
    "--input",
    "input_path",
    required=True,
    help="A .json file (a TF Serving body, or {name: nested list}), a .npy file, or - for "
    "stdin (either kind).",
)
@click.option("--input-name", help="Input name for a .npy array or an unnamed JSON tensor.")
@click.option(
    "--protocol",
    type=click.Choice(["eas", "tfserving", "v2"]),
    default="eas",
    show_default=True,
    help="Wire protocol: EAS protobuf, TF Serving REST JSON, or V2 binary tensors.",
)
@click.option(
    "--token", envvar="LIQI_PREDICT_TOKEN", help="Service token [env LIQI_PREDICT_TOKEN]."
)
@click.option(
    "--auth",
    type=click.Choice(["signature", "raw"]),
    default="signature",
    show_default=True,
    help="Send the token as the EAS SDKs' signature or as is.",
)
@click.option("--timeout-s", type=float, default=30.0, show_default=True, help="Per attempt.")
@click.option("--retries", type=int, default=3, show_default=True, help="On 503/connection errors.")
@click.option(
    "--output",
    "-o",
    type=click.Choice(["json", "table"]),
    default="json",
    show_default=True,
    help="Outputs as JSON ({name: nested list}) or a short table.",
)
@pass_cli
def predict(
    obj: CliContext,
    name: str,
    endpoint: str,
    input_path: str,
    input_name: str | None,
    protocol: str,
    token: str | None,
    auth: str,
    timeout_s: float,
    retries: int,
    output: str,
) -> None:
    """Send one prediction to model NAME and print its outputs.

    \b
    Examples:
      liqi predict mnist --endpoint 127.0.0.1:8501 --input digits.json
      liqi predict mnist --endpoint 127.0.0.1:8501 --input images.npy --protocol v2
      echo '{"instances": [[0.0, ...]]}' | liqi predict mnist --input -
    """
    from liqi.client.predict import PredictClient
    from liqi.protocols.tensors import describe

    data = _read(input_path)
    with PredictClient(
        endpoint,
        name,
        token,
        protocol=protocol,  # type: ignore[arg-type]
        auth=auth,  # type: ignore[arg-type]
        timeout_s=timeout_s,
        retries=retries,
    ) as client:
        inputs = _inputs(data, input_path, input_name, client.signature)
        outputs = client.predict(inputs)
    if output == "json":
        echo_json({key: value.tolist() for key, value in _printable(outputs).items()})
        return
    rows = [(key, describe(value), _preview(value)) for key, value in outputs.items()]
    table(None, ["OUTPUT", "SHAPE/DTYPE", "VALUES"], rows)


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidRequestError(f"Cannot read --input {path!r}: {exc.strerror}.") from None


def _inputs(
    data: bytes, path: str, input_name: str | None, signature: Any
) -> dict[str, np.ndarray]:
    import numpy as np

    from liqi.protocols import tfserving
    from liqi.protocols.tensors import load_json

    if data.startswith(_NPY_MAGIC):
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise InvalidRequestError(f"--input {path!r} is not a readable .npy: {exc}") from None
        return {input_name or _only_input(signature(), path): array}
    document = load_json(data, f"--input {path!r}")
    if "instances" in document or "inputs" in document:
        decoded = tfserving.decode_predict(data, model="cli").inference.inputs
    else:
        decoded = {key: tfserving.to_array(value, key) for key, value in document.items()}
    if list(decoded) == [tfserving.UNNAMED_INPUT]:
        return {input_name or _only_input(signature(), path): decoded[tfserving.UNNAMED_INPUT]}
    return decoded


def _only_input(signature: Signature | None, path: str) -> str:
    if signature is not None and len(signature.inputs) == 1:
        return next(iter(signature.inputs))
    known = f" The model's inputs: {', '.join(signature.inputs)}." if signature else ""
    raise InvalidRequestError(
        f"--input {path!r} holds one unnamed tensor; name its input with --input-name.{known}"
    )


def _printable(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Bytes tensors as text (UTF-8, replacing what is not)."""
    import numpy as np

    result = {}
    for key, value in outputs.items():
        if value.dtype.kind == "O":
            text = [
                item.decode("utf-8", "replace") if isinstance(item, bytes) else item
                for item in value.ravel().tolist()
            ]
            value = np.array(text, dtype=object).reshape(value.shape)
        result[key] = value
    return result


def _preview(value: np.ndarray, limit: int = 8) -> str:
    flat = _printable({"v": value})["v"].ravel().tolist()
    shown = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in flat[:limit])
    return f"[{shown}{', ...' if len(flat) > limit else ''}]"
