"""Where listing photos' bytes live: a small :class:`PhotoStorage` protocol.

:class:`LocalPhotoStorage` keeps them as files under one directory (development and
single-host deployments); :class:`MemoryPhotoStorage` is the in-memory fake for tests. Keys
are minted here (:func:`new_storage_key`: 32 random hex characters and an extension), never
taken from a client, and every implementation refuses a key that does not have that shape —
so no key can name a path outside the store, whatever reaches it.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from pathlib import Path
from typing import Protocol

from cloud.errors import NotFound

_KEY = re.compile(r"^[0-9a-f]{32}\.(jpg|png|webp)$")


def new_storage_key(extension: str) -> str:
    key = f"{secrets.token_hex(16)}.{extension}"
    check_key(key)
    return key


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a photo storage key: {key!r}")
    return key


class PhotoStorage(Protocol):
    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; :class:`~cloud.errors.NotFound` if none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; no error if it is already gone."""
        ...


class LocalPhotoStorage:
    """Files ``{root}/{key[:2]}/{key}``, written atomically (temp file, fsync, rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        check_key(key)
        return self.root / key[:2] / key

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, self._path(key), data)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        with tmp.open("xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as exc:
            raise NotFound("photo", key) from exc

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)


class MemoryPhotoStorage:
    """The in-memory fake (tests, demos)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    async def put(self, key: str, data: bytes) -> None:
        self.blobs[check_key(key)] = data

    async def get(self, key: str) -> bytes:
        try:
            return self.blobs[check_key(key)]
        except KeyError as exc:
            raise NotFound("photo", key) from exc

    async def delete(self, key: str) -> None:
        self.blobs.pop(check_key(key), None)
