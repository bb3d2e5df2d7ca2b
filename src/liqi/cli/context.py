"""What every command shares: the environment, global options, and how to build a client."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import click

from liqi.client import Client
from liqi.config import ServerSettings, default_home, load_server_settings, profile_path


@dataclass
class CliContext:
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    home: Path | None = None
    profile: str | None = None
    debug: bool = False

    def __post_init__(self) -> None:
        if self.home is not None:
            # The client resolves LIQI_HOME from the environment it is given.
            self.environ["LIQI_HOME"] = str(self.home)

    @property
    def liqi_home(self) -> Path:
        return default_home(self.environ)

    @property
    def profile_path(self) -> Path:
        return profile_path(self.environ)

    def client(self) -> Client:
        return Client(profile=self.profile, environ=self.environ)

    def server_settings(
        self,
        host: str | None = None,
        port: int | None = None,
        cors_origins: tuple[str, ...] = (),
        isolation: str | None = None,
    ) -> ServerSettings:
        return load_server_settings(
            self.environ,
            home=self.home,
            host=host,
            port=port,
            cors_origins=cors_origins,
            isolation=isolation,
        )


pass_cli = click.make_pass_decorator(CliContext)
