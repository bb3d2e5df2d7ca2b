"""Warm-up requests: ``liqi serve --warmup-file PATH`` (EAS's ``warm_up_data_path``).

The file is either a ``.bin`` holding one serialized EAS ``PredictRequest`` (what the EAS
SDK's ``TFRequest.to_string()`` writes), or a ``.txt`` with one request body per line (string
requests for custom processors, or JSON bodies). Once the model is loaded and before the
server counts as ready, each request is replayed :data:`REPEATS` times, as EAS does, through
the same handler a ``POST /api/predict/<name>`` reaches, so the first real requests find
every lazy path (graph optimisation, allocators, caches) already taken.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from liqi.asgi.http import OCTET, Request
from liqi.errors import InvalidRequestError, LiqiError, ModelLoadError, NotFoundError
from liqi.serving import eas_routes

if TYPE_CHECKING:
    from liqi.serving.app import ServingApp

log = logging.getLogger(__name__)

REPEATS = 5  # EAS replays each warm-up request five times
_FORMS = (
    "a .bin file holding one serialized EAS PredictRequest (TFRequest.to_string()) or a .txt "
    "file with one request per line"
)


@dataclass(frozen=True)
class WarmupRequests:
    """The request bodies of a warm-up file, in order."""

    source: str  # the file, as named in messages
    bodies: tuple[bytes, ...]
    content_type: str  # "" lets the EAS route tell JSON from raw bodies

    @classmethod
    def read(cls, path: Path) -> WarmupRequests:
        """Read ``path``.

        Raises:
            NotFoundError: the file does not exist.
            InvalidRequestError: it cannot be read, has another suffix, or holds no request.
        """
        suffix = path.suffix.lower()
        if suffix not in (".bin", ".txt"):
            raise InvalidRequestError(
                f"Warm-up file {path} is neither .bin nor .txt. Pass {_FORMS}."
            )
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"Warm-up file {path} does not exist. Check --warmup-file; pass {_FORMS}."
            ) from None
        except OSError as exc:
            raise InvalidRequestError(
                f"Cannot read warm-up file {path}: {exc.strerror or exc}."
            ) from None
        if suffix == ".bin":
            bodies: tuple[bytes, ...] = (data,) if data else ()
            content_type = OCTET
        else:
            lines = (line.rstrip(b"\r") for line in data.split(b"\n"))
            bodies = tuple(line for line in lines if line.strip())
            content_type = ""
        if not bodies:
            raise InvalidRequestError(f"Warm-up file {path} is empty. Pass {_FORMS}.")
        return cls(source=str(path), bodies=bodies, content_type=content_type)


async def replay(
    app: ServingApp, name: str, warmup: WarmupRequests, *, repeats: int = REPEATS
) -> None:
    """Send every request of ``warmup`` ``repeats`` times to model ``name``'s EAS handler.

    Raises:
        ModelLoadError: a request was not answered with a 2xx status; the message names it,
            the file, the status and the answer.
    """
    started = time.monotonic()
    headers = {"content-type": warmup.content_type} if warmup.content_type else {}
    total = len(warmup.bodies)
    for number, body in enumerate(warmup.bodies, 1):
        request = Request("POST", f"/api/predict/{name}", headers, body)
        for _ in range(repeats):
            status, answer = await _call(app, request, name)
            if not 200 <= status < 300:
                raise ModelLoadError(
                    f"warm-up request {number} of {total} from {warmup.source} failed: "
                    f"{status} {answer}"
                )
    log.info(
        "model=%s warmed up: %d request(s) x %d from %s in %.2fs",
        name,
        total,
        repeats,
        warmup.source,
        time.monotonic() - started,
    )


async def _call(app: ServingApp, request: Request, name: str) -> tuple[int, str]:
    """The status and (shortened) text of the route's answer, errors included."""
    try:
        response = await eas_routes.handle(app, request, name)
    except LiqiError as exc:
        return exc.http_status, exc.message
    except Exception as exc:  # a bug of ours: the same 500 a client would get, logged
        log.exception("model=%s warm-up request failed", name)
        return 500, f"internal error ({type(exc).__name__}: {exc})"
    text = response.body[:500].decode("utf-8", errors="replace")
    return response.status, text
