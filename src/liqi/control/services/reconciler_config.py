"""The reconciler's settings: where instances live, how fast it ticks, how it stages and
stops them, and where a service runs when its spec names no resource group."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from liqi.control.fetch_policy import FetchPolicy
from liqi.control.services.transfer import StagingLimits

DRAIN_TIMEOUT_S = 30.0
STOP_GRACE_S = 30.0


@dataclass(frozen=True)
class ReconcilerConfig:
    home: Path
    services_dir: Path
    cache_dir: Path
    tick_s: float = 0.2
    drain_timeout_s: float = DRAIN_TIMEOUT_S
    stop_grace_s: float = STOP_GRACE_S
    staging: StagingLimits = field(default_factory=StagingLimits)
    staging_workers: int = 2
    fetches: FetchPolicy = field(default_factory=FetchPolicy)
    sandbox: bool = False  # isolation "sandbox": local instances run in liqi.sandbox
    resource_group: str = "local"  # where a service without metadata.resource runs
