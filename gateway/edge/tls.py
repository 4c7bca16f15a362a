"""The edge's certificates: loaded from files, chosen per handshake by SNI, reloaded in place.

The listening ``SSLContext`` never changes: its SNI callback moves each handshake to the context
of the chosen certificate, from a table that ``reload`` replaces whole. A reload therefore drops
no connection (an established one keeps the context it was handshaken with) and a failed
reload (a certificate replaced before its key) keeps the table that worked.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from gateway.core.tls_names import PREVIEW, certificate_for, key_of_file_stem

log = logging.getLogger("gateway.tls")

Signature = tuple[tuple[str, int, int], ...]


class CertificateError(Exception):
    """No usable default certificate; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    preview_domain: str
    cert: Path | None
    """The preview domain's (wildcard) certificate chain, PEM."""
    key: Path | None
    cert_dir: Path | None
    """``<name>.pem`` + ``<name>.key`` per domain (``_wildcard.<name>`` for ``*.<name>``)."""

    def pairs(self) -> dict[str, tuple[Path, Path]]:
        """Every certificate's key and its (chain, key) files, the preview one first."""
        found: dict[str, tuple[Path, Path]] = {}
        if self.cert is not None and self.key is not None:
            found[PREVIEW] = (self.cert, self.key)
        if self.cert_dir is not None:
            for pem in sorted(self.cert_dir.glob("*.pem")):
                name = key_of_file_stem(pem.stem)
                key = pem.with_suffix(".key")
                if name is not None and key.is_file():
                    found.setdefault(name, (pem, key))
        return found

    def signature(self) -> Signature:
        """What changes when any certificate file does: cheap (stat calls, no reading)."""
        seen = []
        for chain, key in self.pairs().values():
            for path in (chain, key):
                try:
                    st = path.stat()
                except OSError:
                    continue
                seen.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(seen)


def server_context(chain: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # The edge speaks HTTP/1.1 only: without ALPN a browser could try h2 on this socket.
    context.set_alpn_protocols(["http/1.1"])
    if chain is not None and key is not None:
        context.load_cert_chain(chain, key)
    return context


class CertificateStore:
    def __init__(self, files: CertificateFiles, interval_s: float = 5.0) -> None:
        self._files = files
        self.interval_s = interval_s
        """How often ``watch`` checks the files."""
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._default: ssl.SSLContext | None = None
        self._signature: Signature = ()
        self.listening = server_context()
        self.listening.sni_callback = self._choose
        self.reloads = 0

    def load(self) -> None:
        """The first load: raises ``CertificateError`` when there is no default certificate."""
        if not self.reload():
            raise CertificateError("no TLS certificate could be loaded (see the log above)")

    def reload(self) -> bool:
        """Re-read every certificate; on success swap them in and return True. A certificate
        that fails to load keeps its previous version, or is left out if it had none."""
        signature = self._files.signature()
        contexts: dict[str, ssl.SSLContext] = {}
        for name, (chain, key) in self._files.pairs().items():
            try:
                contexts[name] = server_context(chain, key)
            except (OSError, ssl.SSLError) as exc:
                # Half-replaced (the new key beside the old chain) or broken: the one that
                # worked keeps serving until the files are right again.
                log.warning("TLS certificate %s not loaded: %s", chain, exc)
                if name in self._contexts:
                    contexts[name] = self._contexts[name]
        if not contexts:
            log.error("no TLS certificate loaded; keeping the previous ones")
            return False
        self._contexts = contexts
        self._default = next(iter(contexts.values()))  # the preview one when configured
        self._signature = signature
        self.reloads += 1
        log.info("TLS certificates loaded: %d", len(contexts))
        return True

    def changed(self) -> bool:
        return self._files.signature() != self._signature

    async def watch(self, interval_s: float) -> None:
        """Reload when a file changes (polled: inotify is not everywhere, and stat is cheap)."""
        while True:
            await asyncio.sleep(interval_s)
            if self.changed():
                self.reload()

    def _choose(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        name = certificate_for(server_name, self._files.preview_domain, self._contexts)
        context = self._contexts[name] if name is not None else self._default
        if context is not None:
            sslobj.context = context


def files_from(
    preview_domain: str, cert: str | None, key: str | None, cert_dir: str | None
) -> CertificateFiles | None:
    """The configured files, or None when TLS is off."""
    if not (cert and key) and not cert_dir:
        return None
    return CertificateFiles(
        preview_domain,
        Path(cert) if cert else None,
        Path(key) if key else None,
        Path(os.path.expanduser(cert_dir)) if cert_dir else None,
    )
