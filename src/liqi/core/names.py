"""Names users give to objects, and the rules they follow."""

from __future__ import annotations

import re
from enum import Enum

from liqi.errors import InvalidRequestError

PROJECT_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{2,63}$")
ACCESS_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{3,127}$")
SECRET_RE = re.compile(r"^[\x21-\x7e]{8,256}$")


class Role(str, Enum):
    """What an access key may do in one project. ADMIN may do everything MEMBER may."""

    ADMIN = "admin"
    MEMBER = "member"

    def allows(self, needed: Role) -> bool:
        return self is Role.ADMIN or needed is Role.MEMBER


def check_project_name(name: str) -> str:
    if not PROJECT_NAME_RE.fullmatch(name):
        raise InvalidRequestError(
            f"Invalid project name {name!r}: use 3 to 64 letters, digits or underscores, "
            "starting with a letter (for example 'algo_platform')."
        )
    return name


def check_access_id(access_id: str) -> str:
    if not ACCESS_ID_RE.fullmatch(access_id):
        raise InvalidRequestError(
            f"Invalid access id {access_id!r}: use 4 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return access_id


def check_secret(secret: str) -> str:
    if not SECRET_RE.fullmatch(secret):
        raise InvalidRequestError(
            "Invalid access key secret: use 8 to 256 printable ASCII characters without spaces."
        )
    return secret
