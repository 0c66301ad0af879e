"""Values that stand in for real ones: the example stack files' ``example.com``, ``Z0PRODEXAMPLE`` zones,
the AWS documentation's account ``123456789012``, image digests the offline harness made up from a tag,
and ``to-do:`` settings. The offline plan lists them; a real preview or up stops on them (issue: "Placeholders
cannot reach a real account")."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

from .catalog import is_placeholder

# RFC 2606 and RFC 6761: names reserved for documentation and tests; they never resolve to anyone's service.
_RESERVED_NAME = re.compile(r"(^|[.@/])([a-z0-9-]+\.)*(example\.(com|net|org)|example|test|invalid|localhost)(?=$|[/:?#])", re.IGNORECASE)
# The account id the AWS documentation uses in every example ARN.
EXAMPLE_ACCOUNT = "123456789012"
_EXAMPLE_WORD = re.compile(r"EXAMPLE")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def offline_digest(repository: str, tag: str) -> str:
    """The digest the offline harness gives ``<repository>:<tag>`` (``tools/harness.py`` ``pushed_images``):
    a stand-in that looks real, so a stack file that carries one was never promoted from a real build."""
    return "sha256:" + hashlib.sha256(f"{repository}:{tag}".encode()).hexdigest()


def why(value: str) -> str | None:
    """Why ``value`` is a placeholder, or None."""
    if is_placeholder(value):
        return "a 'to-do:' placeholder"
    if _RESERVED_NAME.search(value):
        return "a name reserved for examples (RFC 2606: example.com, .test, .invalid), not yours"
    if f":{EXAMPLE_ACCOUNT}:" in value:
        return f"an ARN in account {EXAMPLE_ACCOUNT}, the AWS documentation's example account"
    if _EXAMPLE_WORD.search(value):
        return "an example value (it contains 'EXAMPLE')"
    return None


def _walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def find(config: dict[str, Any], tags: Iterable[str] = ()) -> list[tuple[str, str, str]]:
    """``(key, value, why)`` for every placeholder in ``config`` (``platform:`` keys and their values, no
    secrets). ``tags``: tags named anywhere in the project's stack files; an image digest equal to the
    offline harness's digest of one of them is a placeholder too."""
    tags = sorted(set(tags))
    out = []
    for key, value in config.items():
        for path, text in _walk(value, key):
            reason = why(text)
            m = re.fullmatch(r"platform:systems\.([a-z0-9-]+)\.images\.([a-z0-9-]+)", path)
            if reason is None and m and _DIGEST.match(text) and text in {offline_digest(f"{m[1]}/{m[2]}", t) for t in tags}:
                reason = "a digest the offline plan computed from a tag, not an image anyone built: promote a real one"
            if reason:
                out.append((path, text, reason))
    return out
