"""Personality files (Nova's file injection, removed from the API in 2.57): the files a
server is created or rebuilt with, their quota, and how the instance keeps them.

The API passes the files on as (path, base64 contents) pairs; the instance keeps them in
its system metadata, from which the config drive and the metadata service give them to
the guest (`meta_data.json` `files` and `openstack/content/NNNN`, as Nova's metadata).
A rebuild replaces them (Nova's rebuild injects only the files it is given).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

# The system metadata key holding the files (a JSON list of [path, base64 contents]).
SYSMETA_KEY = "injected_files"


class PersonalityLimitExceeded(Exception):
    """Nova's OnsetFileLimitExceeded and its path/content variants (403 at the API)."""


def check_quota(limits: Mapping[str, int], files: Sequence[tuple[str, str]]) -> None:
    """Nova's _check_injected_file_quota: the number of files, then the longest path and
    the longest contents (as given, base64) against the project's limits (-1: none)."""
    if not files:
        return

    def over(resource: str, value: int) -> bool:
        limit = limits.get(resource, -1)
        return limit >= 0 and value > limit

    if over("injected_files", len(files)):
        raise PersonalityLimitExceeded("Personality file limit exceeded")
    longest_path = max(len(path) for path, _ in files)
    longest_content = max(len(contents) for _, contents in files)
    if over("injected_file_path_bytes", longest_path):
        raise PersonalityLimitExceeded(
            f"Personality file path exceeds maximum {limits['injected_file_path_bytes']}"
        )
    if over("injected_file_content_bytes", longest_content):
        raise PersonalityLimitExceeded(
            f"Personality file content exceeds maximum {limits['injected_file_content_bytes']}"
        )


def with_files(sysmeta: Mapping[str, Any], files: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The system metadata holding exactly `files` (none: the key is dropped)."""
    kept = {k: v for k, v in sysmeta.items() if k != SYSMETA_KEY}
    if files:
        kept[SYSMETA_KEY] = json.dumps([[path, contents] for path, contents in files])
    return kept


def files_of(sysmeta: Mapping[str, Any] | None) -> tuple[tuple[str, bytes], ...]:
    """The instance's files as the guest gets them: (path, decoded contents)."""
    raw = (sysmeta or {}).get(SYSMETA_KEY)
    if not raw:
        return ()
    return tuple((path, base64.b64decode(contents)) for path, contents in json.loads(raw))
