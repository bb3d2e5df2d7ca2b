"""Streaming helpers shared by the SDK's upload and download methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from liqi.errors import LiqiError, error_from_body

Progress = Callable[[int], None]


def answer_error(answer: httpx.Response) -> LiqiError:
    """The error a (read) error answer stands for."""
    body: Any
    try:
        body = answer.json()
    except ValueError:
        body = answer.text
    return error_from_body(answer.status_code, body)
