"""The write rules every store applies, in one copy: what a put or a delete may do, decided from
what the store read. Pure: each store reads (inside its transaction), asks here, then writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.core import domains
from gateway.core.records import CustomHost, Domain, Preview, Route, Sandbox
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
    custom: CustomHost | None = None
    """The custom hostname's entry to write (``Preview.custom_domain``)."""
    old_custom: str | None = None
    """The custom hostname this preview leaves: its entry and its route go."""
    custom_route: Route | None = None
    """The route at the custom hostname, when its domain is served: written with the preview's
    own, so a token revoked on one hostname is revoked on both in the same transaction."""

    @property
    def custom_host(self) -> str:
        return self.stored.custom_domain or ""

    @property
    def touched(self) -> list[str]:
        """Hostnames whose cached routes must be invalidated."""
        routed = [self.custom_route.hostname] if self.custom_route else []
        left = [h for h in (self.old_hostname, self.old_custom) if h]
        return [self.stored.hostname, *routed, *left]


def plan_preview_put(
    preview: Preview,
    *,
    sandbox: Sandbox | None,
    old: Preview | None,
    holder: Route | None,
    create: bool,
    force: bool,
    expect_revision: int | None,
    custom_holder: CustomHost | None = None,
    domain: Domain | None = None,
) -> PutResult | PreviewWrite:
    """``old`` is the stored preview of that name, ``holder`` the route now at its hostname,
    ``custom_holder`` the entry at its custom hostname and ``domain`` the domain it is attached
    to. Another preview's custom hostname is ``HOST_TAKEN`` even with ``force``: the service
    deletes that preview and tries again."""
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
    if custom_holder is not None and _key(custom_holder) != key:
        return PutResult.HOST_TAKEN
    moved = old is not None and old.hostname != preview.hostname
    old_custom = old.custom_domain if old is not None else None
    custom = None
    # Attached only to a domain that is (still) the workspace's: a preview written after its
    # domain was deleted keeps the name in its spec but holds nothing, so it can never block
    # the workspace that registers the domain next.
    owned = domain is not None and (domain.name, domain.workspace) == (
        preview.domain,
        preview.workspace,
    )
    if preview.custom_domain and owned:
        custom = CustomHost(
            domain=preview.domain,
            workspace=preview.workspace,
            sandbox=preview.sandbox,
            preview=preview.name,
        )
    route = Route.build(sandbox, stored)
    return PreviewWrite(
        stored=stored,
        route=route,
        custom_route=_custom_route(route, preview.custom_domain, custom, domain),
        evict=evict,
        old_hostname=old.hostname if moved and old is not None else None,
        custom=custom,
        old_custom=old_custom if old_custom != preview.custom_domain else None,
    )


def _custom_route(
    route: Route, host: str | None, custom: CustomHost | None, domain: Domain | None
) -> Route | None:
    """The route at the custom hostname, if it is attached (``custom``) and its domain served."""
    if host is None or custom is None or domain is None or not domain.served:
        return None
    return route.model_copy(update={"hostname": host})


def _key(entry: CustomHost) -> PreviewKey:
    return (entry.workspace, entry.sandbox, entry.preview)


@dataclass(frozen=True)
class Attached:
    """A custom hostname in a domain's table, with what the store found for its holder."""

    hostname: str
    entry: CustomHost | None
    preview: Preview | None
    sandbox: Sandbox | None


@dataclass(frozen=True)
class DomainRoutes:
    """What syncing a domain writes: its routes, the keys it removes, the table's dead rows."""

    routes: dict[str, Route]
    removed: list[str]
    dropped: list[str]
    """Hostnames whose row in the table goes: no preview of this domain holds them now."""
    forgotten: list[str]
    """Of those, the ones whose entry names this domain: the entry goes too."""

    @property
    def touched(self) -> list[str]:
        return [*self.routes, *self.removed]


def plan_domain_routes(
    name: str,
    domain: Domain | None,
    attached: list[Attached],
    fallback: tuple[Preview | None, Sandbox | None],
) -> DomainRoutes:
    """Routes derived from a domain (None: deleted) and what its table and fallback name. Only
    a served (verified) domain has routes; every other key of it is removed."""
    routes: dict[str, Route] = {}
    removed: list[str] = []
    dropped: list[str] = []
    forgotten: list[str] = []
    for row in attached:
        preview, sandbox, entry = row.preview, row.sandbox, row.entry
        alive = (
            entry is not None
            and entry.domain == name
            and preview is not None
            and preview.custom_domain == row.hostname
        )
        if not alive or domain is None:
            dropped.append(row.hostname)
            if entry is not None and entry.domain == name:
                forgotten.append(row.hostname)
        if alive and domain is not None and domain.served and preview and sandbox:
            route = Route.build(sandbox, preview)
            routes[row.hostname] = route.model_copy(update={"hostname": row.hostname})
        else:
            removed.append(row.hostname)
    key = domains.fallback_key(name)
    target, target_sandbox = fallback
    if domain is not None and domain.served and target is not None and target_sandbox is not None:
        route = Route.build(target_sandbox, target)
        headers = {
            **route.request_headers,
            **domains.fallback_headers(name, target.sandbox, target.name),
        }
        routes[key] = route.model_copy(update={"hostname": key, "request_headers": headers})
    else:
        removed.append(key)
    return DomainRoutes(routes, removed, dropped, forgotten)


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
