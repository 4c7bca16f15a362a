"""Which certificate answers a TLS handshake, from its SNI name. Pure: no I/O.

Certificates are keyed by the name their files carry in ``GATEWAY_TLS_CERT_DIR``: ``app.acme.dev``
for ``app.acme.dev.pem``/``.key``, and ``_wildcard.acme.dev`` for a certificate of
``*.acme.dev``. The preview domain's certificate (``GATEWAY_TLS_CERT``) has the key ``PREVIEW``.
"""

from __future__ import annotations

from collections.abc import Container

PREVIEW = ""
"""The key of the preview domain's certificate (no file in the directory has an empty name)."""
WILDCARD_PREFIX = "_wildcard."
"""File names cannot hold ``*`` portably, so ``*.acme.dev`` is stored as ``_wildcard.acme.dev``."""


def key_of_file_stem(stem: str) -> str | None:
    """The key of a ``<stem>.pem`` in the certificate directory, or None for a stem that is
    not a name (a stray file must not become a certificate for some odd name)."""
    name = stem.lower()
    bare = name.removeprefix(WILDCARD_PREFIX)
    labels = bare.split(".")
    if not bare or any(not label or not _label_ok(label) for label in labels):
        return None
    return name


def _label_ok(label: str) -> bool:
    return len(label) <= 63 and all(c.isalnum() or c == "-" for c in label) and label.isascii()


def certificate_for(
    server_name: str | None, preview_domain: str, available: Container[str]
) -> str | None:
    """The key of the certificate for ``server_name``: the exact name, then a wildcard one
    label up, then the preview domain's certificate for a name under it. None: the default
    certificate (an unknown name still gets a handshake, then the edge's 404 page)."""
    if not server_name:
        return None
    name = server_name.lower().rstrip(".")
    if name in available:
        return name
    _, dot, parent = name.partition(".")
    if dot and WILDCARD_PREFIX + parent in available:
        return WILDCARD_PREFIX + parent
    under_preview = name == preview_domain or name.endswith("." + preview_domain)
    if under_preview and PREVIEW in available:
        return PREVIEW
    return None
