"""Settings of the server and profiles of the client.

Order of precedence, highest first: explicit arguments (CLI flags, ``Client(...)`` keywords),
environment variables (``LIQI_*``), the profile file (``LIQI_HOME/config.toml`` or
``LIQI_CONFIG``), defaults. Settings are built once at an entry point and passed down; nothing
here runs at import time.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli_w

from liqi.errors import ConfigError
from liqi.logs.rotation import DEFAULT_BACKUPS, DEFAULT_MAX_MB, MAX_BACKUPS, LogLimits
from liqi.resource_groups import (
    LOCAL,
    LOCAL_GROUP,
    ResourceGroup,
    check_default,
    parse_project_groups,
    parse_resource_groups,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_PROFILE = "default"
PROFILE_KEYS = (
    "endpoint",
    "access_id",
    "access_key",
    "project",
    "oss_host",
    "oss_access_id",
    "oss_access_key",
)


def default_home(environ: Mapping[str, str]) -> Path:
    home = environ.get("LIQI_HOME")
    return Path(home).expanduser() if home else Path.home() / ".liqi"


#: How the processes that run user code are confined (ServerSettings.isolation).
ISOLATIONS = ("sandbox", "none")


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``liqi server run`` needs. Build with :func:`load_server_settings`."""

    home: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    database_url: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    # How long a client has to send a buffered request body [LIQI_BODY_TIMEOUT_S]: then 408.
    body_timeout_s: float = 60.0
    # How long a write waits for a SQLite database another process holds locked before the
    # request fails with 503 database_unavailable [LIQI_DATABASE_BUSY_TIMEOUT_S].
    database_busy_timeout_s: float = 30.0
    # A standby model server (TensorFlow imported) for the next TensorFlow instance, so
    # `create`, `scale` and waking from zero skip the import [LIQI_STANDBY=0 turns it off].
    standby: bool = True
    # Origins whose web pages may call the API and the gateway from a browser (CORS).
    cors_origins: tuple[str, ...] = ()
    # Bounds on fetching what one service instance needs (an http(s) model archive, a
    # processor, a warm-up file) [LIQI_STAGING_TIMEOUT_S, LIQI_STAGING_MAX_MB].
    staging_timeout_s: float = 600.0
    staging_max_mb: int = 4096
    # What specs may make the server reach (liqi/control/fetch_policy.py): non-public
    # addresses for http(s) model and processor URLs (hosts, IPs, CIDRs; "*" for all)
    # [LIQI_ALLOW_PRIVATE_URLS], store endpoints a non-superuser key may name (hosts or
    # host:port) [LIQI_STORE_ENDPOINTS], folders whose files a non-superuser key may name in a
    # spec [LIQI_LOCAL_MODEL_ROOTS].
    allow_private_urls: tuple[str, ...] = ()
    store_endpoints: tuple[str, ...] = ()
    local_model_roots: tuple[Path, ...] = ()
    # "sandbox": job tasks run in liqi.sandbox; "none": as the server's user. None: sandbox
    # where this machine can (see liqi.sandbox.choose_isolation) [LIQI_ISOLATION, --isolation].
    isolation: str | None = None
    # server.log and each instance.log rotate at this size, keeping this many old files.
    log_max_mb: float = DEFAULT_MAX_MB
    log_backups: int = DEFAULT_BACKUPS
    # Where jobs run: `local` and the Ray clusters of LIQI_RESOURCE_GROUPS; a job that names
    # none runs in `resource_group` [LIQI_RESOURCE_GROUP] (liqi/resource_groups.py).
    resource_groups: tuple[ResourceGroup, ...] = (LOCAL_GROUP,)
    resource_group: str = LOCAL
    # A project's own default group [LIQI_PROJECT_RESOURCE_GROUPS], as (project, group) pairs.
    project_groups: tuple[tuple[str, str], ...] = ()

    @property
    def log_limits(self) -> LogLimits:
        return LogLimits.from_mb(self.log_max_mb, self.log_backups)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'liqi.db'}"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def secret_key_path(self) -> Path:
        return self.home / "secret.key"

    @property
    def profile_path(self) -> Path:
        return self.home / "config.toml"


def load_server_settings(
    environ: Mapping[str, str],
    *,
    home: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    cors_origins: tuple[str, ...] = (),
    isolation: str | None = None,
) -> ServerSettings:
    """Server settings from flags (the keyword arguments) over ``LIQI_*`` variables."""
    chosen_isolation = isolation or environ.get("LIQI_ISOLATION", "").strip().lower() or None
    if chosen_isolation not in (None, *ISOLATIONS):
        raise ConfigError(
            f"Isolation {chosen_isolation!r} is not one of {', '.join(ISOLATIONS)} "
            "(--isolation or LIQI_ISOLATION; unset: sandbox where available)."
        )
    port_text = environ.get("LIQI_PORT")
    env_port: int | None = None
    if port_text:
        if not re.fullmatch(r"-?[0-9]+", port_text):
            raise ConfigError(f"LIQI_PORT={port_text!r} is not a port number.")
        env_port = int(port_text)
    chosen_port = port if port is not None else (env_port if env_port is not None else DEFAULT_PORT)
    if not 0 <= chosen_port <= 65535:
        raise ConfigError(
            f"Port {chosen_port} is out of range: use 0 to 65535 (0 picks a free one)."
        )
    groups = parse_resource_groups(environ.get("LIQI_RESOURCE_GROUPS", ""))
    default_group = check_default(environ.get("LIQI_RESOURCE_GROUP", "").strip() or LOCAL, groups)
    return ServerSettings(
        home=(home or default_home(environ)).expanduser().absolute(),
        host=host or environ.get("LIQI_HOST") or DEFAULT_HOST,
        port=chosen_port,
        database_url=environ.get("LIQI_DATABASE_URL") or None,
        standby=environ.get("LIQI_STANDBY", "1").strip().lower() not in ("0", "false", "no"),
        cors_origins=_origins(cors_origins or (environ.get("LIQI_CORS_ORIGINS", ""),)),
        staging_timeout_s=_positive(environ, "LIQI_STAGING_TIMEOUT_S", 600.0),
        body_timeout_s=_positive(environ, "LIQI_BODY_TIMEOUT_S", 60.0),
        database_busy_timeout_s=_positive(environ, "LIQI_DATABASE_BUSY_TIMEOUT_S", 30.0),
        staging_max_mb=int(_positive(environ, "LIQI_STAGING_MAX_MB", 4096)),
        **fetch_settings(environ),
        isolation=chosen_isolation,
        **log_settings(environ),
        resource_groups=groups,
        resource_group=default_group,
        project_groups=parse_project_groups(
            environ.get("LIQI_PROJECT_RESOURCE_GROUPS", ""), groups
        ),
    )


def _positive(environ: Mapping[str, str], name: str, default: float) -> float:
    """A positive number from the environment, or ``default`` when unset."""
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError(f"{name}={text!r} is not a positive number (default {default:g}).")
    return value


def fetch_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """``allow_private_urls``, ``store_endpoints`` and ``local_model_roots`` from
    ``LIQI_ALLOW_PRIVATE_URLS``, ``LIQI_STORE_ENDPOINTS`` and ``LIQI_LOCAL_MODEL_ROOTS``."""
    from liqi.control.fetch_policy import parse_private_urls

    private = environ.get("LIQI_ALLOW_PRIVATE_URLS", "")
    try:
        allow_private_urls = parse_private_urls(private)
    except ValueError as exc:
        raise ConfigError(
            f"LIQI_ALLOW_PRIVATE_URLS={private!r}: {exc}. Give 1 to allow every address, or "
            "comma-separated host names, IPs and CIDRs, e.g. 10.0.0.0/8,models.internal."
        ) from None
    endpoints = environ.get("LIQI_STORE_ENDPOINTS", "")
    store_endpoints = tuple(e.strip().lower() for e in endpoints.split(",") if e.strip())
    for entry in store_endpoints:
        if not re.fullmatch(r"[a-z0-9.\-\[\]:_]+", entry):
            raise ConfigError(
                f"LIQI_STORE_ENDPOINTS={endpoints!r}: {entry!r} is not a host or host:port "
                "(e.g. minio.internal:9000,oss-cn-hangzhou.aliyuncs.com)."
            )
    roots_text = environ.get("LIQI_LOCAL_MODEL_ROOTS", "")
    roots = tuple(Path(r.strip()) for r in re.split(r"[:,]", roots_text) if r.strip())
    for root in roots:
        if not root.is_absolute():
            raise ConfigError(
                f"LIQI_LOCAL_MODEL_ROOTS={roots_text!r}: {str(root)!r} is not an absolute path "
                "(give absolute folders, separated by ':' or ',')."
            )
    return {
        "allow_private_urls": allow_private_urls,
        "store_endpoints": store_endpoints,
        "local_model_roots": roots,
    }


def log_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """``log_max_mb`` and ``log_backups`` from ``LIQI_LOG_MAX_MB`` and ``LIQI_LOG_BACKUPS``."""
    settings: dict[str, Any] = {}
    max_mb = environ.get("LIQI_LOG_MAX_MB", "").strip()
    if max_mb:
        try:
            value = float(max_mb)
        except ValueError:
            value = math.nan
        if not 0 < value < 1e6:
            raise ConfigError(
                f"LIQI_LOG_MAX_MB={max_mb!r} is not a size: give the megabytes a log file "
                f"grows to before it rotates, e.g. {DEFAULT_MAX_MB:g}."
            )
        settings["log_max_mb"] = value
    backups = environ.get("LIQI_LOG_BACKUPS", "").strip()
    if backups:
        if not re.fullmatch(r"[0-9]+", backups) or int(backups) > MAX_BACKUPS:
            raise ConfigError(
                f"LIQI_LOG_BACKUPS={backups!r} is not a count: give how many rotated log files "
                f"to keep, 0 to {MAX_BACKUPS}, e.g. {DEFAULT_BACKUPS}."
            )
        settings["log_backups"] = int(backups)
    return settings


def _origins(values: tuple[str, ...]) -> tuple[str, ...]:
    """Flag values or one environment value, each possibly comma-separated; a value that is
    not an origin raises ConfigError here, before a server starts."""
    from liqi.asgi.cors import CorsPolicy

    policy = CorsPolicy.parse(values)
    return tuple(sorted(policy.origins)) if policy else ()


@dataclass(frozen=True)
class Profile:
    """One named set of client settings."""

    name: str
    endpoint: str | None = None
    access_id: str | None = None
    access_key: str | None = None
    project: str | None = None
    oss_host: str | None = None
    oss_access_id: str | None = None
    oss_access_key: str | None = None

    def as_table(self) -> dict[str, str]:
        return {k: v for k in PROFILE_KEYS if (v := getattr(self, k)) is not None}


@dataclass
class ProfileFile:
    """The profile file: ``current`` and ``[profiles.<name>]`` tables. Saved with mode 0600."""

    path: Path
    current: str | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ProfileFile:
        if not path.exists():
            return cls(path=path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(
                f"Cannot read the profile file {path}: {exc}. Fix or delete it."
            ) from None
        profiles: dict[str, Profile] = {}
        raw_profiles = data.get("profiles", {})
        if not isinstance(raw_profiles, dict):
            raise ConfigError(f"{path}: 'profiles' must be a table of [profiles.<name>] tables.")
        for name, table in raw_profiles.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: [profiles.{name}] must be a table.")
            unknown = sorted(set(table) - set(PROFILE_KEYS))
            if unknown:
                raise ConfigError(
                    f"{path}: unknown key(s) {', '.join(unknown)} in [profiles.{name}]. "
                    f"Known keys: {', '.join(PROFILE_KEYS)}."
                )
            profiles[name] = Profile(name=name, **{k: str(v) for k, v in table.items()})
        current = data.get("current")
        return cls(path=path, current=str(current) if current else None, profiles=profiles)

    def save(self) -> None:
        data: dict[str, Any] = {}
        if self.current:
            data["current"] = self.current
        data["profiles"] = {name: p.as_table() for name, p in sorted(self.profiles.items())}
        write_private_file(self.path, tomli_w.dumps(data).encode())

    def upsert(self, profile: Profile, *, make_current: bool = False) -> None:
        self.profiles[profile.name] = profile
        if make_current or not self.current:
            self.current = profile.name

    def get(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles)) or "none"
            raise ConfigError(
                f"No profile named {name!r} in {self.path}. Known profiles: {known}."
            ) from None


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def profile_path(environ: Mapping[str, str]) -> Path:
    explicit = environ.get("LIQI_CONFIG")
    return Path(explicit).expanduser() if explicit else default_home(environ) / "config.toml"


@dataclass(frozen=True)
class ClientConfig:
    """What a client needs to talk to a server; every field resolved."""

    endpoint: str
    access_id: str | None
    access_key: str | None
    project: str | None
    profile: str | None = None


def resolve_client_config(
    environ: Mapping[str, str],
    *,
    endpoint: str | None = None,
    access_id: str | None = None,
    access_key: str | None = None,
    project: str | None = None,
    profile: str | None = None,
) -> ClientConfig:
    """Arguments over ``LIQI_ENDPOINT``/``LIQI_ACCESS_ID``/``LIQI_ACCESS_KEY``/``LIQI_PROJECT``
    over the profile named by ``profile``, ``LIQI_PROFILE`` or the file's ``current``."""
    file = ProfileFile.load(profile_path(environ))
    wanted = profile or environ.get("LIQI_PROFILE")
    if wanted:
        chosen: Profile | None = file.get(wanted)
    elif file.current and file.current in file.profiles:
        chosen = file.profiles[file.current]
    else:
        chosen = None
    base = chosen or Profile(name="")
    merged = replace(
        base,
        endpoint=endpoint or environ.get("LIQI_ENDPOINT") or base.endpoint,
        access_id=access_id or environ.get("LIQI_ACCESS_ID") or base.access_id,
        access_key=access_key or environ.get("LIQI_ACCESS_KEY") or base.access_key,
        project=project or environ.get("LIQI_PROJECT") or base.project,
    )
    return ClientConfig(
        endpoint=(merged.endpoint or f"http://{DEFAULT_HOST}:{DEFAULT_PORT}").rstrip("/"),
        access_id=merged.access_id,
        access_key=merged.access_key,
        project=merged.project,
        profile=chosen.name if chosen else None,
    )
