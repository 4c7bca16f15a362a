"""Control API keys: ``workspace:key`` pairs from settings and from an optional keys file.

Keys are compared in constant time against a SHA-256 of each, so neither the length nor the
prefix of a valid key leaks through timing. The file is checked on every request (one stat) and
re-read when its modification time changes, so keys rotate without a restart; a file that fails
to parse leaves the last good keys in force. The file form is in docs/api.md.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Iterable

log = logging.getLogger("gateway.control")

_WORKSPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_pairs(lines: Iterable[str]) -> list[tuple[str, str]]:
    pairs = []
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        workspace, sep, key = line.partition(":")
        workspace, key = workspace.strip(), key.strip()
        if not sep or not _WORKSPACE.match(workspace) or len(key) < 16:
            raise ValueError("each key line must be `workspace:key`, the key 16+ characters")
        pairs.append((workspace, key))
    return pairs


class KeyRing:
    def __init__(self, pairs: Iterable[tuple[str, str]], file: str | None = None) -> None:
        self._static = [(_digest(key), ws) for ws, key in pairs]
        self._file = file
        self._seen: tuple[int, int, int] | None = None
        """(mtime_ns, size, inode) of the file version last read, good or not: each version is
        read (and a bad one logged) once. The inode catches a rename over the file."""
        self._from_file: list[tuple[bytes, str]] = []
        self._error: str | None = None
        self.reload()

    def reload(self, *, force: bool = False) -> None:
        """Re-read the keys file if it changed (every request calls this) or, with ``force``
        (SIGHUP), whatever its stat says: a file rewritten within one mtime tick on a coarse
        filesystem looks unchanged."""
        if self._file is None:
            return
        if force:
            self._seen = None
        try:
            st = os.stat(self._file)
            version = (st.st_mtime_ns, st.st_size, st.st_ino)
            if version == self._seen:
                return
            self._seen = version
            with open(self._file, encoding="utf-8") as fh:
                pairs = parse_pairs(fh)
        except (OSError, ValueError) as exc:
            # Keep the last good set: a half-written file must not lock everyone out. A missing
            # file is retried on every request, but logged once until it changes.
            if str(exc) != self._error:
                self._error = str(exc)
                log.error("keys file not loaded (%s); keeping %d keys", exc, len(self._from_file))
            return
        self._error = None
        self._from_file = [(_digest(key), ws) for ws, key in pairs]
        log.info("loaded %d API keys from the keys file", len(self._from_file))

    def workspace_for(self, key: str) -> str | None:
        """The workspace of ``key``, or None. Every stored key is compared, match or not."""
        self.reload()
        probe = _digest(key)
        found: str | None = None
        for digest, workspace in (*self._static, *self._from_file):
            if hmac.compare_digest(probe, digest):
                found = workspace
        return found
