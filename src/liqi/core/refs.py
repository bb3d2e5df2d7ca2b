"""Names and addresses of stored things: bucket names, object keys, ``oss://`` URIs.

Pure: no I/O. Every check raises :class:`InvalidRequestError` with the offending value and the
rule it breaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from liqi.errors import InvalidRequestError

ROLE_ARN_RE = re.compile(r"^acs:ram::[^:/\s]+:role/\S+$")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
KEY_MAX_BYTES = 1023


def check_bucket_name(name: str) -> str:
    """OSS rules: 3 to 63 characters, lowercase letters, digits and hyphens, starting and
    ending with a letter or digit."""
    if not BUCKET_RE.fullmatch(name):
        raise InvalidRequestError(
            f"Invalid bucket name {name!r}: use 3 to 63 lowercase letters, digits or hyphens, "
            "starting and ending with a letter or digit (for example 'models')."
        )
    return name


def check_key(key: str, *, allow_folder: bool = True) -> str:
    """An object key: relative, '/'-separated, no '.' or '..' segments, no empty segments
    (a single trailing '/' marks a folder), no NUL or backslash, at most 1023 UTF-8 bytes."""
    problem = _key_problem(key, allow_folder=allow_folder)
    if problem:
        raise InvalidRequestError(f"Invalid object key {key!r}: {problem}.")
    return key


def _key_problem(key: str, *, allow_folder: bool) -> str | None:
    if not key:
        return "it is empty"
    if len(key.encode("utf-8", "surrogatepass")) > KEY_MAX_BYTES:
        return f"it is longer than {KEY_MAX_BYTES} bytes"
    if "\x00" in key or "\\" in key or any(ord(c) < 0x20 for c in key):
        return "it contains a NUL, a control character or a backslash"
    if key.startswith("/"):
        return "it must not start with '/' (keys are relative to the bucket)"
    body = key[:-1] if key.endswith("/") else key
    if key.endswith("/") and not allow_folder:
        return "it names a folder (ends with '/'), not an object"
    if not body:
        return "it has no name before the '/'"
    for segment in body.split("/"):
        if segment in ("", ".", ".."):
            return "it has an empty, '.' or '..' path segment"
    return None


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key (possibly a partial last segment)."""
    if prefix:
        check_key(prefix)
    return prefix


@dataclass(frozen=True)
class OssUri:
    """``oss://<bucket>/<key>`` with the seed's optional ``?role_arn=...&host=...`` query.

    ``role_arn`` and ``host`` are accepted for compatibility with PAI-TF's ``-Dbuckets``; what a
    project may do with a bucket is decided by the bucket's grants (``liqi oss grant``).
    """

    bucket: str
    key: str = ""
    role_arn: str | None = None
    host: str | None = None

    def __str__(self) -> str:
        return f"oss://{self.bucket}/{self.key}"

    @property
    def is_folder(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    def child(self, name: str) -> OssUri:
        base = self.key if self.is_folder else self.key + "/"
        return OssUri(self.bucket, base + name, self.role_arn, self.host)


def parse_oss_uri(text: str) -> OssUri:
    """Parse ``oss://bucket[/key][?role_arn=..&host=..]``.

    Raises:
        InvalidRequestError: not an oss:// URI, a bad bucket name or key, or an unknown query
            parameter.
    """
    hint = "write oss://<bucket>/<key>, for example oss://models/mnist/."
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # an unbalanced '[' or ']' in the bucket
        raise InvalidRequestError(f"{text!r} is not an oss:// URI ({exc}): {hint}") from None
    if parts.scheme != "oss" or not parts.netloc:
        raise InvalidRequestError(f"{text!r} is not an oss:// URI: {hint}")
    bucket = check_bucket_name(parts.netloc)
    key = parts.path[1:] if parts.path.startswith("/") else parts.path
    if key:
        check_key(key)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - {"role_arn", "host"})
    if unknown:
        raise InvalidRequestError(
            f"Unknown parameter(s) {', '.join(unknown)} in {text!r}: oss:// URIs accept "
            "role_arn and host."
        )
    role_arn = params.get("role_arn") or None
    if role_arn is not None and not ROLE_ARN_RE.match(role_arn):
        raise InvalidRequestError(
            f"role_arn {role_arn!r} in {text!r} is not of the form acs:ram::<account>:role/<name>."
        )
    return OssUri(bucket, key, role_arn, params.get("host") or None)
