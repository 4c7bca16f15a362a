"""The write rules every store applies, in one copy: what a put or a delete may do, decided from
what the store read. Pure: each store reads (inside its transaction), asks here, then writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.core.records import Preview, Route, Sandbox
from gateway.store.base import PutResult

PreviewKey = tuple[str, str, str]
"""Workspace, sandbox and preview name."""


@dataclass(frozen=True)
class PreviewWrite:
    """What a put-preview that passed the rules writes."""

    stored: Preview
    """The preview with its next revision."""
    route: Route
    evict: PreviewKey | None
    """A preview of the same workspace whose hostname this one takes (``force``): deleted."""
    old_hostname: str | None
    """The hostname this preview leaves: its route goes."""

    @property
    def touched(self) -> list[str]:
        """Hostnames whose cached routes must be invalidated."""
        return [self.stored.hostname, *([self.old_hostname] if self.old_hostname else [])]


def plan_preview_put(
    preview: Preview,
    *,
    sandbox: Sandbox | None,
    old: Preview | None,
    holder: Route | None,
    create: bool,
    force: bool,
    expect_revision: int | None,
) -> PutResult | PreviewWrite:
    """``old`` is the stored preview of that name, ``holder`` the route now at its hostname."""
    if sandbox is None:
        return PutResult.NO_SANDBOX
    if create and old is not None:
        return PutResult.NAME_EXISTS
    if expect_revision is not None and (old is None or old.revision != expect_revision):
        return PutResult.CHANGED
    stored = preview.model_copy(update={"revision": old.revision + 1 if old else 0})
    key = (preview.workspace, preview.sandbox, preview.name)
    evict: PreviewKey | None = None
    if holder is not None and (holder.workspace, holder.sandbox, holder.preview) != key:
        if not force or holder.workspace != preview.workspace:
            return PutResult.HOST_TAKEN
        evict = (holder.workspace, holder.sandbox, holder.preview)
    moved = old is not None and old.hostname != preview.hostname
    return PreviewWrite(
        stored=stored,
        route=Route.build(sandbox, stored),
        evict=evict,
        old_hostname=old.hostname if moved and old is not None else None,
    )


def plan_sandbox_put(*, exists: bool, create: bool, must_exist: bool) -> PutResult:
    if create and exists:
        return PutResult.NAME_EXISTS
    if must_exist and not exists:
        return PutResult.NO_SANDBOX
    return PutResult.OK


def deletable(record: Sandbox | Preview | None, only_expired_at: datetime | None) -> bool:
    """A conditional delete (``only_expired_at``) spares a record recreated or renewed since it
    was found expired."""
    if record is None:
        return False
    return only_expired_at is None or record.expired(only_expired_at)
