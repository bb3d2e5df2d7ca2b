"""Encryption of stored access-key secrets with the server's own key (``LIQI_HOME/secret.key``).

The database never holds a secret in clear: a copy of the database alone does not let anyone
sign requests. The key file is created on first start with mode 0600.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from liqi.config import write_private_file
from liqi.errors import ConfigError, SecretKeyMismatchError


class SecretBox:
    """Encrypts and decrypts secrets. Thread-safe (Fernet holds no mutable state)."""

    def __init__(self, key: bytes, path: Path | None = None) -> None:
        self._fernet = Fernet(key)
        self._key = key
        self._path = path

    @classmethod
    def open(cls, path: Path) -> SecretBox:
        """Load the key at ``path``, creating it (mode 0600) when it does not exist."""
        if not path.exists():
            write_private_file(path, Fernet.generate_key())
        try:
            key = path.read_bytes().strip()
            return cls(key, path)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"Cannot use the server key {path}: {exc}. Restore it from a backup; without "
                "it the stored access keys cannot be checked."
            ) from None

    def derive_key(self, purpose: str) -> bytes:
        """A key for ``purpose`` (for example signing presigned URLs), derived from the server
        key, so it changes when the server key does and is never stored."""
        return hmac.new(self._key, purpose.encode(), hashlib.sha256).digest()

    def encrypt(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        try:
            return self._fernet.decrypt(ciphertext).decode()
        except InvalidToken:
            raise SecretKeyMismatchError(
                f"The server key {self._path} does not match the database: stored access keys "
                "cannot be decrypted. Restore the secret.key that belongs to this database."
            ) from None
