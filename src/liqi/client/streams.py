"""Streaming helpers shared by the SDK's upload and download methods."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from liqi.errors import LiqiError, error_from_body
from liqi.stores.base import CHUNK_BYTES

Progress = Callable[[int], None]


def read_chunks(path: Path, progress: Progress | None) -> Iterator[bytes]:
    """A file in CHUNK_BYTES pieces, reporting each piece's size to ``progress``."""
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            if progress:
                progress(len(chunk))
            yield chunk


def answer_error(answer: httpx.Response) -> LiqiError:
    """The error a (read) error answer stands for."""
    body: Any
    try:
        body = answer.json()
    except ValueError:
        body = answer.text
    return error_from_body(answer.status_code, body)
