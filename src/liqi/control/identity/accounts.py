"""Projects, access keys and roles: the rules, over a database session."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from liqi.control.db.secretbox import SecretBox
from liqi.control.db.tables import AccessKey, Project, RoleBinding, ServerState, utcnow
from liqi.core.names import Role, check_access_id, check_project_name, check_secret
from liqi.errors import (
    AccessKeyNotFoundError,
    AlreadyExistsError,
    ConflictError,
    PermissionDeniedError,
    ProjectNotFoundError,
)

_ID_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class Principal:
    """Who is calling: the access key and the role it holds in each project (by project id)."""

    key_id: int
    access_id: str
    is_superuser: bool
    roles: dict[int, Role]
    scope_json: str | None = None  # a workload key's scope (workload_keys.WorkloadScope)

    def role_in(self, project_id: int) -> Role | None:
        if self.is_superuser:
            return Role.ADMIN
        return self.roles.get(project_id)


def new_access_id() -> str:
    return "LQ" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(18))


def new_secret() -> str:
    return secrets.token_urlsafe(30)


def load_principal(session: Session, key: AccessKey) -> Principal:
    return Principal(
        key_id=key.id,
        access_id=key.access_id,
        is_superuser=key.is_superuser,
        roles={b.project_id: Role(b.role) for b in key.bindings},
        scope_json=key.scope_json,
    )


def find_active_key(session: Session, access_id: str) -> AccessKey | None:
    stmt = (
        select(AccessKey)
        .where(AccessKey.access_id == access_id, AccessKey.revoked_at.is_(None))
        .options(selectinload(AccessKey.bindings))
    )
    return session.scalars(stmt).first()


# -- projects ---------------------------------------------------------------------------------


def visible_projects(session: Session, who: Principal) -> list[Project]:
    stmt = select(Project).order_by(Project.name)
    if not who.is_superuser:
        stmt = stmt.where(Project.id.in_(list(who.roles)))
    return list(session.scalars(stmt))


def get_project(
    session: Session, who: Principal, name: str, *, needs: Role = Role.MEMBER
) -> Project:
    """The project named ``name`` as ``who`` may see it.

    Raises:
        ProjectNotFoundError: it does not exist or ``who`` has no role in it (the two are not
            told apart, so keys cannot probe for other projects' names).
        PermissionDeniedError: ``who`` is a member but the action needs ``needs``.
    """
    project = session.scalars(select(Project).where(Project.name == name)).first()
    role = who.role_in(project.id) if project else None
    if project is None or role is None:
        raise ProjectNotFoundError(
            f"Project {name!r} does not exist or your access key {who.access_id} has no role "
            "in it. List yours with `liqi project list`."
        )
    if not role.allows(needs):
        raise PermissionDeniedError(
            f"Access key {who.access_id} is a {role.value} of project {name!r}; this needs "
            f"the {needs.value} role. Ask an admin: `liqi key grant {who.access_id} "
            f"--project {name} --role {needs.value}`."
        )
    return project


def create_project(session: Session, who: Principal, name: str, description: str = "") -> Project:
    check_project_name(name)
    if not who.is_superuser:
        raise PermissionDeniedError(
            f"Only a superuser key can create projects; {who.access_id} is not one. "
            "Use the key in the profile the server wrote to LIQI_HOME/config.toml."
        )
    if session.scalars(select(Project).where(Project.name == name)).first():
        raise AlreadyExistsError(f"Project {name!r} already exists.")
    project = Project(name=name, description=description, created_at=utcnow())
    session.add(project)
    session.flush()
    return project


def delete_project(session: Session, who: Principal, name: str) -> None:
    project = get_project(session, who, name, needs=Role.ADMIN)
    session.delete(project)


# -- access keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewKey:
    key: AccessKey
    secret: str


def keys_visible_to(session: Session, who: Principal, project: Project | None) -> list[AccessKey]:
    stmt = (
        select(AccessKey)
        .where(AccessKey.workload.is_(None))  # workload keys are the reconciler's
        .options(selectinload(AccessKey.bindings).selectinload(RoleBinding.project))
    )
    if project is not None:
        stmt = stmt.join(RoleBinding).where(RoleBinding.project_id == project.id)
    elif not who.is_superuser:
        admin_of = [pid for pid, role in who.roles.items() if role is Role.ADMIN]
        stmt = stmt.outerjoin(RoleBinding).where(
            (RoleBinding.project_id.in_(admin_of)) | (AccessKey.id == who.key_id)
        )
    return list(session.scalars(stmt.order_by(AccessKey.created_at, AccessKey.id)).unique())


def create_key(
    session: Session,
    box: SecretBox,
    who: Principal | None,
    *,
    project: Project | None,
    role: Role,
    name: str = "",
    superuser: bool = False,
    access_id: str | None = None,
    secret: str | None = None,
) -> NewKey:
    """Create an access key, optionally bound to ``project`` with ``role``.

    ``who`` is None only for the server's own bootstrap. Registering a given ``access_id`` and
    ``secret`` (config import) or creating a superuser needs a superuser; creating a key in a
    project needs that project's admin role (checked by the caller when resolving ``project``).
    An ``access_id`` already registered with the same secret is not an error: the existing key
    gets the role (imports are idempotent).
    """
    if who is not None and not who.is_superuser:
        if superuser or access_id is not None:
            raise PermissionDeniedError(
                "Only a superuser key can create superuser keys or register an existing access "
                f"id; {who.access_id} is not one."
            )
        if project is None:
            raise PermissionDeniedError(
                "A key created by a project admin must belong to a project: pass --project."
            )
    if access_id is not None:
        check_access_id(access_id)
    if secret is not None:
        check_secret(secret)
    chosen_id = access_id or new_access_id()
    existing = session.scalars(select(AccessKey).where(AccessKey.access_id == chosen_id)).first()
    if existing is not None:
        if (
            secret is None
            or existing.revoked_at is not None
            or box.decrypt(existing.secret_ciphertext) != secret
        ):
            raise AlreadyExistsError(
                f"Access id {chosen_id!r} is already registered with a different secret. Revoke "
                f"it first with `liqi key revoke {chosen_id}`, or use another access id."
            )
        if project is not None:
            bind_role(session, existing, project, role)
        return NewKey(key=existing, secret=secret)
    chosen_secret = secret or new_secret()
    key = AccessKey(
        access_id=chosen_id,
        secret_ciphertext=box.encrypt(chosen_secret),
        name=name,
        is_superuser=superuser,
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    if project is not None:
        bind_role(session, key, project, role)
    return NewKey(key=key, secret=chosen_secret)


def bind_role(session: Session, key: AccessKey, project: Project, role: Role) -> None:
    binding = session.scalars(
        select(RoleBinding).where(
            RoleBinding.access_key_id == key.id, RoleBinding.project_id == project.id
        )
    ).first()
    if binding is None:
        session.add(RoleBinding(access_key_id=key.id, project_id=project.id, role=role.value))
    else:
        binding.role = role.value
    session.flush()
    session.refresh(key, ["bindings"])


def get_key_for_admin(session: Session, who: Principal, access_id: str) -> AccessKey:
    """The key ``access_id`` if ``who`` may manage it: a superuser, the key itself, or an
    admin of a project the key belongs to."""
    key = session.scalars(
        select(AccessKey)
        .where(AccessKey.access_id == access_id)
        .options(selectinload(AccessKey.bindings))
    ).first()
    if key is not None and (who.is_superuser or key.id == who.key_id):
        return key
    if key is not None and any(who.role_in(b.project_id) is Role.ADMIN for b in key.bindings):
        if key.is_superuser:
            raise PermissionDeniedError(
                f"Access key {access_id} is a superuser key; only a superuser can manage it."
            )
        return key
    raise AccessKeyNotFoundError(
        f"Access key {access_id!r} does not exist or is not in a project you administer. "
        "List keys with `liqi key list`."
    )


def revoke_key(session: Session, who: Principal, access_id: str, *, now: datetime) -> AccessKey:
    key = get_key_for_admin(session, who, access_id)
    if key.revoked_at is not None:
        return key
    if key.is_superuser:
        others = session.scalars(
            select(AccessKey).where(
                AccessKey.is_superuser.is_(True),
                AccessKey.revoked_at.is_(None),
                AccessKey.id != key.id,
            )
        ).first()
        if others is None:
            raise ConflictError(
                f"Access key {access_id} is the last superuser key; revoking it would lock "
                "everyone out. Create another with `liqi key create --superuser` first."
            )
    key.revoked_at = now
    return key


# -- server state -----------------------------------------------------------------------------


def get_state(session: Session, key: str) -> str | None:
    row = session.get(ServerState, key)
    return row.value if row else None


def set_state(session: Session, key: str, value: str) -> None:
    row = session.get(ServerState, key)
    if row is None:
        session.add(ServerState(key=key, value=value))
    else:
        row.value = value


def unbind_role(session: Session, key: AccessKey, project: Project) -> None:
    for binding in list(key.bindings):
        if binding.project_id == project.id:
            session.delete(binding)
    session.flush()
    session.refresh(key, ["bindings"])
