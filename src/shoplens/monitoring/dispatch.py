"""Drift flagged: ask GitHub to run the retrain workflow.

A ``repository_dispatch`` event (GitHub's REST API) of the type ``.github/workflows/retrain.yml``
listens for, carrying the monitor's verdict as ``client_payload`` so the run says why it
started. The token comes from ``$GITHUB_TOKEN`` only (a fine-grained token with "Contents:
write" on the repository), never from the config. Standard library only: one POST does not
justify a client dependency.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from typing import Any

log = logging.getLogger(__name__)
TOKEN_ENV, REPOSITORY_ENV = "GITHUB_TOKEN", "GITHUB_REPOSITORY"


class DispatchError(RuntimeError):
    """The retrain could not be requested (no token, no repository, GitHub refused)."""


def payload(result: dict[str, Any], event_type: str) -> dict[str, Any]:
    """The event: which tests drifted against which reference (GitHub allows 10 top-level
    keys in client_payload, so the details stay in the monitor's report)."""
    drifted = {
        name: sorted(k for k, v in found.items() if isinstance(v, dict) and v.get("drifted"))
        for name, found in result.get("comparisons", {}).items()
        if found.get("drifted")
    }
    return {
        "event_type": event_type,
        "client_payload": {
            "model": result.get("model"),
            "queries": result.get("queries"),
            "window_hours": result.get("window_hours"),
            "drifted": drifted,
        },
    }


def dispatch_retrain(
    result: dict[str, Any], repository: str | None, event_type: str, api_url: str
) -> str:
    """POST the event; returns the repository it went to. Raises :class:`DispatchError`."""
    repository = repository or os.environ.get(REPOSITORY_ENV)
    token = os.environ.get(TOKEN_ENV)
    if not repository:
        raise DispatchError(
            f"monitor.dispatch: no repository (set monitor.dispatch.github_repository or "
            f"${REPOSITORY_ENV} to owner/name)"
        )
    if not token:
        raise DispatchError(f"monitor.dispatch: ${TOKEN_ENV} is not set")
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/repos/{repository}/dispatches",
        data=json.dumps(payload(result, event_type)).encode(),
        method="POST",
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        raise DispatchError(
            f"GitHub refused the retrain request for {repository}: HTTP {err.code} {err.reason}"
        ) from None
    except urllib.error.URLError as err:
        raise DispatchError(f"could not reach {api_url}: {err.reason}") from None
    if status != 204:
        raise DispatchError(f"GitHub answered HTTP {status} to the retrain request (want 204)")
    log.info("drift: asked %s to retrain (repository_dispatch %s)", repository, event_type)
    return repository
