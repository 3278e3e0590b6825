"""Tenants, their devices and their API keys: the `Registry` methods about who uses the service.

An API key is ``nfk_<key id>_<secret>``; only a salted hash of the secret is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from nasfleet.server.registry.checks import (
    DEVICE_NAME_LENGTH,
    DEVICE_STATUSES,
    NAME_LENGTH,
    check_choice,
    check_error_text,
    check_json,
    check_name,
    check_optional_hash,
    check_text,
    require,
)
from nasfleet.server.registry.records import ApiKeyRecord, DeviceRecord, TenantRecord
from nasfleet.server.registry.rows import id_of, insert, rowcount, table_of, tenant_row
from nasfleet.server.registry.sessions import Sessions
from nasfleet.server.registry.tables import ApiKeyRow, DeviceRow, TenantRow, as_utc, utcnow

API_KEY_PREFIX = "nfk"


class Tenants(Sessions):
    """The `Registry` methods about tenants, devices and API keys (a mixin of `Registry`)."""

    def create_tenant(self, name: str, *, exist_ok: bool = False) -> TenantRecord:
        """Add tenant *name*; an existing name is an error unless *exist_ok*, which returns that tenant."""
        name = check_name("tenant", name)
        with self._session(write=True) as session:
            statement = insert(session, TenantRow).values(name=name, created_at=utcnow())
            ignoring = statement.on_conflict_do_nothing(index_elements=["name"])
            created = len(session.exec(ignoring.returning(table_of(TenantRow).c.id)).all())
            require(created == 1 or exist_ok, "tenant", "a name not yet registered", name)
            return tenant_record(tenant_row(session, name))

    def get_tenant(self, name: str) -> TenantRecord | None:
        with self._session() as session:
            row = session.exec(select(TenantRow).where(TenantRow.name == name)).first()
            return None if row is None else tenant_record(row)

    def list_tenants(self) -> list[TenantRecord]:
        with self._session() as session:
            return read_tenants(session)

    def upsert_device(
        self, tenant: str, name: str, *, tier: str, constraints: Mapping[str, Any] | None = None,
        profile: Mapping[str, Any] | None = None, characteristics_hash: str | None = None,
        status: str = "ok", error: str | None = None,
    ) -> DeviceRecord:  # fmt: skip
        """Add a tenant's device, or replace every field of the one with that name."""
        values = {
            "name": check_name("device", name, DEVICE_NAME_LENGTH),
            "tier": check_text("tier", tier, NAME_LENGTH),
            "constraints": check_json("constraints", constraints or {}),
            "profile": check_json("profile", profile or {}),
            "characteristics_hash": check_optional_hash("characteristics_hash", characteristics_hash),
            "status": check_choice("status", status, DEVICE_STATUSES),
            "error": check_error_text(error),
            "updated_at": utcnow(),
        }
        with self._session(write=True) as session:
            tenant_id = id_of(tenant_row(session, check_name("tenant", tenant)))
            statement = insert(session, DeviceRow).values(tenant_id=tenant_id, **values)
            changes = {key: statement.excluded[key] for key in values if key != "name"}
            session.exec(statement.on_conflict_do_update(index_elements=["tenant_id", "name"], set_=changes))
            return read_devices(session, tenant, values["name"])[0]

    def list_devices(self, tenant: str | None = None) -> list[DeviceRecord]:
        with self._session() as session:
            return read_devices(session, tenant)

    def create_api_key(self, tenant: str) -> str:
        """A new API key for *tenant*: returned in plain text this once; only a salted hash is stored.

        The key is ``nfk_<key id>_<secret>`` with a 256-bit random secret. Such a secret cannot be
        guessed, so a salted SHA-256 suffices; a slow password hash only protects low-entropy secrets.
        """
        key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_hex(16)
        with self._session(write=True) as session:
            tenant_id = id_of(tenant_row(session, check_name("tenant", tenant)))
            session.add(
                ApiKeyRow(key_id=key_id, tenant_id=tenant_id, salt=salt, key_hash=_hash(salt, secret))
            )
        return f"{API_KEY_PREFIX}_{key_id}_{secret}"

    def verify_api_key(self, key: str) -> TenantRecord | None:
        """The tenant whose valid, unrevoked key *key* is; None for any other string."""
        parts = key.split("_", 2) if isinstance(key, str) else []
        if len(parts) != 3 or parts[0] != API_KEY_PREFIX:
            return None
        with self._session() as session:
            statement = select(ApiKeyRow, TenantRow).join(TenantRow).where(ApiKeyRow.key_id == parts[1])
            found = session.exec(statement).first()
            if found is None or found[0].revoked_at is not None:
                return None
            return (
                tenant_record(found[1])
                if hmac.compare_digest(found[0].key_hash, _hash(found[0].salt, parts[2]))
                else None
            )

    def revoke_api_key(self, key: str) -> bool:
        """Revoke a key, given in full or by its key id; False if there is no such unrevoked key."""
        parts = key.split("_", 2) if isinstance(key, str) else []
        key_id = parts[1] if len(parts) == 3 and parts[0] == API_KEY_PREFIX else key
        with self._session(write=True) as session:
            revoke = update(ApiKeyRow).where(
                col(ApiKeyRow.key_id) == key_id, col(ApiKeyRow.revoked_at).is_(None)
            )
            return rowcount(session.exec(revoke.values(revoked_at=utcnow()))) == 1

    def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        with self._session() as session:
            return read_api_keys(session, tenant)


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


# -- reading: rows become records here, inside the session ---------------------------------------------------
def tenant_record(row: TenantRow) -> TenantRecord:
    assert row.id is not None
    return TenantRecord(row.id, row.name, as_utc(row.created_at))


def read_tenants(session: Session) -> list[TenantRecord]:
    return [tenant_record(row) for row in session.exec(select(TenantRow).order_by(col(TenantRow.name)))]


def read_devices(session: Session, tenant: str | None = None, name: str | None = None) -> list[DeviceRecord]:
    statement = select(DeviceRow, TenantRow.name).join(TenantRow)
    if tenant is not None:
        statement = statement.where(TenantRow.name == tenant)
    if name is not None:
        statement = statement.where(DeviceRow.name == name)
    return [
        DeviceRecord(
            tenant_name,
            row.name,
            row.tier,
            row.constraints,
            row.profile,
            row.characteristics_hash,
            row.status,
            row.error,
            as_utc(row.updated_at),
        )
        for row, tenant_name in session.exec(statement.order_by(col(TenantRow.name), col(DeviceRow.name)))
    ]


def read_api_keys(session: Session, tenant: str | None = None) -> list[ApiKeyRecord]:
    statement = select(ApiKeyRow, TenantRow.name).join(TenantRow)
    if tenant is not None:
        statement = statement.where(TenantRow.name == tenant)
    return [
        ApiKeyRecord(row.key_id, tenant_name, as_utc(row.created_at), row.revoked_at is not None)
        for row, tenant_name in session.exec(statement.order_by(col(ApiKeyRow.id)))
    ]
