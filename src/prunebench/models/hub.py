"""Is a name that is no local path a model on the Hugging Face Hub? Asked once, quickly.

transformers retries an unreachable Hub for about 45 s before it gives up and blames the connection;
for a mistyped local path the right answer is that the directory does not exist. :func:`look_up`
answers from the local cache, or with one request without retries.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from prunebench.errors import PrunebenchError
from prunebench.revisions import model_revision

#: Seconds the one request to the Hub may take.
HUB_TIMEOUT = 10.0


@dataclass(frozen=True)
class HubLookup:
    """``found``: the model's config.json is in the local cache or on the Hub. Otherwise ``reason``
    says why not, and ``asked`` whether the Hub answered (False: offline or unreachable)."""

    found: bool
    reason: str = ""
    asked: bool = True


def looks_like_hub_id(name: str) -> bool:
    """``owner/model``: two non-empty parts, not a relative or absolute path."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


@functools.lru_cache(maxsize=64)
def look_up(name: str) -> HubLookup:
    """Whether ``name`` names a model on the Hub: its config.json cached, or there (one HEAD request)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )

    revision = model_revision(name)
    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        return HubLookup(True)
    if constants.HF_HUB_OFFLINE:
        return HubLookup(
            False, "it is not in the local Hugging Face cache (HF_HUB_OFFLINE is set)", asked=False
        )
    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json", revision=revision), timeout=HUB_TIMEOUT)
    except GatedRepoError:
        return HubLookup(False, "it is gated on the Hub: accept its licence there and log in (hf auth login)")
    except RepositoryNotFoundError:
        return HubLookup(False, "the Hub has no such model (or it is private: log in with hf auth login)")
    except RemoteEntryNotFoundError:
        return HubLookup(False, "the Hub model has no config.json")
    except HfHubHTTPError as exc:
        return HubLookup(False, f"the Hub answers {str(exc).splitlines()[0]}")
    except Exception as exc:  # no network, DNS, proxy, TLS: every way of not reaching the Hub
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return HubLookup(
            False, f"the Hub cannot be reached ({reason}) and it is not in the local cache", False
        )
    return HubLookup(True)


def local_parent(name: str) -> Path | None:
    """The existing local folder that ``name`` starts with (``resources`` of ``resources/modle``): then
    ``name`` is a mistyped local path, not a Hub id, and the Hub is not asked."""
    first = Path(Path(name).parts[0]) if Path(name).parts else None
    return first if first is not None and first.is_dir() else None


def check_hub_model(name: str) -> None:
    """Raise ``PrunebenchError`` for a ``name`` that is no local directory and no usable Hub model,
    saying that the local directory does not exist and what the Hub lookup found."""
    where = f"no local directory of that name (in {Path.cwd()})"
    if not looks_like_hub_id(name):
        raise PrunebenchError(f"model not found: {name}: {where}, and it is no Hub id (owner/name) either")
    parent = local_parent(name)
    if parent is not None:
        raise PrunebenchError(
            f"model not found: {name}: {where}; {parent}/ is a local folder, so it is not taken for a Hub id"
        )
    lookup = look_up(name)
    if not lookup.found:
        raise PrunebenchError(
            f"model not found: {name}: {where}, and as a Hugging Face Hub id {lookup.reason}"
        )
