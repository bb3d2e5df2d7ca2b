"""What every route depends on: the control plane, the caller, a database session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from liqi.control.identity import accounts
from liqi.control.identity.auth import PRINCIPAL_SCOPE_KEY
from liqi.control.server.plane import ControlPlane


def plane(request: Request) -> ControlPlane:
    found: ControlPlane = request.app.state.plane
    return found


def principal(request: Request) -> accounts.Principal:
    found: accounts.Principal = request.scope[PRINCIPAL_SCOPE_KEY]
    return found


def db(request: Request) -> Iterator[Session]:
    with plane(request).sessions.begin() as session:
        yield session


PlaneDep = Annotated[ControlPlane, Depends(plane)]
Who = Annotated[accounts.Principal, Depends(principal)]
# NOTE: scope="function" commits before the response is sent, so a client that got its answer
# sees its change in the next request.
DB = Annotated[Session, Depends(db, scope="function")]
