"""Request and response bodies of the control-plane API. Unknown fields are refused."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from liqi.core.names import Role


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectCreate(Body):
    name: StrictStr = Field(max_length=64)
    description: StrictStr = Field(default="", max_length=4096)


class ProjectOut(BaseModel):
    name: str
    description: str
    created_at: datetime
    role: Role


class KeyCreate(Body):
    project: StrictStr | None = None
    role: Role = Role.MEMBER
    name: StrictStr = Field(default="", max_length=128)
    superuser: StrictBool = False
    access_id: StrictStr | None = Field(default=None, max_length=128)
    secret: StrictStr | None = Field(default=None, max_length=256)


class KeyOut(BaseModel):
    access_id: str
    name: str
    is_superuser: bool
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    roles: dict[str, Role]


class KeyCreated(KeyOut):
    secret: str | None = Field(description="Shown once, when the server generated it.")


class RoleGrant(Body):
    role: Role


class WhoAmI(BaseModel):
    access_id: str
    is_superuser: bool
    projects: dict[str, Role]


class ServerInfo(BaseModel):
    version: str
    pid: int
    started_at: datetime
    uptime_s: float
    database: str


class Health(BaseModel):
    status: str
    version: str
    pid: int
    started_at: datetime
    uptime_s: float
