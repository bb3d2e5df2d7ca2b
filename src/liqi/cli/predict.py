"""`liqi predict NAME --input FILE`: one prediction from the command line, to a service found
on the control plane or, with ``--endpoint``, to a model server directly."""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.cli.output import echo_json, table
from liqi.errors import ConfigError, InvalidRequestError, NotFoundError, ServerUnavailableError

if TYPE_CHECKING:
    import numpy as np

    from liqi.client.services import ServiceInfo
    from liqi.client.signatures import Signature

# numpy, protobuf and the client are imported inside the command: other commands stay fast.

_NPY_MAGIC = b"\x93NUMPY"

EPILOG = """\b
Examples:
  liqi predict mnist --input digits.json          service mnist, found on the control plane
  liqi predict mnist --input images.npy --protocol v2 -o table
  echo '{"instances": [[0.0, ...]]}' | liqi predict mnist --input -
  liqi predict mnist --endpoint 127.0.0.1:8501 --input digits.json
                                                  model mnist of a `liqi serve`, directly
"""


@click.command(epilog=EPILOG)
@click.argument("name")
@click.option(
    "--endpoint",
    envvar="LIQI_PREDICT_ENDPOINT",
    help="A model server to call directly, e.g. http://127.0.0.1:8501 [env "
    "LIQI_PREDICT_ENDPOINT; default: service NAME's gateway endpoint, from the control plane].",
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
    "--token",
    envvar="LIQI_PREDICT_TOKEN",
    help="Service token [env LIQI_PREDICT_TOKEN; default without --endpoint: the service's "
    "own, when it needs one].",
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
    endpoint: str | None,
    input_path: str,
    input_name: str | None,
    protocol: str,
    token: str | None,
    auth: str,
    timeout_s: float,
    retries: int,
    output: str,
) -> None:
    """Send one prediction to service (or model) NAME and print its outputs.

    Without --endpoint, NAME is a service (`liqi eas list`): its gateway endpoint and, when it
    needs a token and --token is not given, its token come from the control plane of the
    current profile. A service with no ready instance is refused with its state and reason,
    unless its autoscaler scales from zero (the gateway holds the request while an instance
    starts). With --endpoint, NAME is a model of that model server (`liqi serve`).
    """
    from liqi.client.predict import PredictClient
    from liqi.protocols.tensors import describe

    data = _read(input_path)
    if endpoint is None:
        info, token = _find_service(obj, name, token)
        endpoint = info.endpoint  # <server>/api/predict/<service>
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


def _find_service(obj: CliContext, name: str, token: str | None) -> tuple[ServiceInfo, str | None]:
    """Service ``name`` from the control plane of the current profile, and the token to send:
    ``token`` if given, else the service's own when it needs one. Refuses a service with no
    ready instance (unless the gateway wakes it)."""
    direct = "to call a model server directly, pass --endpoint URL."
    try:
        with obj.client() as client:
            info = client.get_service(name)
            if info.token_required and not token:
                token = client.service_token(name).token
    except ConfigError as exc:
        raise ConfigError(
            f"{exc.message} `liqi predict` without --endpoint needs a profile to look service "
            f"{name!r} up on the control plane; {direct}"
        ) from None
    except ServerUnavailableError as exc:
        raise ServerUnavailableError(
            f"{exc.message} `liqi predict` without --endpoint looks service {name!r} up "
            f"there; {direct}",
            details=exc.details,
        ) from None
    except NotFoundError as exc:
        listing = "" if "liqi eas list" in exc.message else " `liqi eas list` shows the services."
        raise NotFoundError(
            f"{exc.message}{listing} To call a model server that is not a service, pass "
            "--endpoint URL.",
            details=exc.details,
        ) from None
    if not any(i.state == "READY" for i in info.instances) and not _wakes_from_zero(info):
        why = f" ({info.reason})" if info.reason else ""
        raise ServerUnavailableError(
            f"Service {name!r} has no ready instance: it is {info.state}{why}, "
            f"{info.instances_ready} of {info.instances_wanted} wanted instances ready. "
            f"{_next_step(info)}",
            details={"service": name, "state": info.state, "reason": info.reason},
        )
    return info, token


def _wakes_from_zero(info: ServiceInfo) -> bool:
    """An autoscaler with min 0: the gateway holds a request while an instance starts."""
    if info.state not in ("RUNNING", "SCALING") or not info.autoscaler:
        return False
    try:
        return int(info.autoscaler.get("min", 1)) == 0
    except (TypeError, ValueError):
        return False


def _next_step(info: ServiceInfo) -> str:
    name = info.name
    if info.state in ("STOPPED", "STOPPING"):
        return f"Start it with `liqi eas start {name}`."
    if info.state == "FAILED":
        return f"`liqi eas logs {name}` shows why; `liqi eas start {name}` tries again."
    if info.state == "DELETING":
        return "It is being deleted."
    if info.instances_wanted == 0:
        return f"Give it an instance with `liqi eas scale {name} 1`."
    return f"Its instances are starting; `liqi eas desc {name}` shows their progress."


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
