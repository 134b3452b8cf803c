"""Videos the bridge keeps itself: Venice's bytes, and copies of providers' results.

``open_media_store(settings)`` gives the store ``BRIDGE_MEDIA_STORE`` names: a directory
(:class:`DirectoryStore`, the embedded default) or ``s3://bucket[/prefix]`` (:class:`S3Store`).
``Fetcher.copy`` mirrors a provider's link into one.
"""

from __future__ import annotations

from bridge.media.base import MediaStore, Stored, check_key
from bridge.media.copy import Fetcher, Mirrored, MirrorFailed, MirrorResult
from bridge.media.directory import DirectoryStore
from bridge.media.s3 import S3Store
from bridge.settings import Settings, s3_location

__all__ = ["DirectoryStore", "Fetcher", "MediaStore", "MirrorFailed", "MirrorResult",
           "Mirrored", "S3Store", "Stored", "check_key", "open_media_store"]


def open_media_store(settings: Settings) -> MediaStore:
    location = s3_location(settings.media_store)
    if location is None:
        return DirectoryStore(settings.media_store)
    bucket, prefix = location
    return S3Store(bucket, prefix, endpoint_url=settings.s3_endpoint_url)
