"""Support code: is Jovian configured and reachable? Checked before any upload (lessons need not read this).

Never prints or returns the API key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def jovian_credentials_path() -> Path:
    """Where the Jovian client keeps its API key (``jovian configure`` writes it)."""
    return Path(os.path.expanduser("~")) / ".jovian" / "credentials.json"


def jovian_status(timeout_s: float = 5.0, creds_path: Path | None = None) -> tuple[bool, str]:
    """(ready, reason): True only when a key is configured and the Jovian API accepts it within the timeout.

    Never prints or returns the key itself.
    """
    if os.environ.get("CXR_JOVIAN", "").strip() == "0":
        return False, "Jovian is switched off (CXR_JOVIAN=0)."
    path = creds_path or jovian_credentials_path()
    try:
        creds = json.loads(path.read_text())
    except FileNotFoundError:
        return False, f"No Jovian credentials ({path} does not exist). Run `jovian configure` once to add your API key."
    except (OSError, json.JSONDecodeError):
        return False, f"The Jovian credentials file {path} is unreadable. Run `jovian configure` again."
    key = creds.get("API_KEY")
    if not key:
        return False, f"{path} holds no API key. Run `jovian configure` to add one."
    api_url = creds.get("API_URL") or "https://api.jovian.com/"
    import requests

    try:
        response = requests.get(api_url.rstrip("/") + "/user/profile", headers={"Authorization": "Bearer " + key}, timeout=timeout_s)
    except requests.RequestException as err:
        return False, f"The Jovian service at {api_url} did not answer ({type(err).__name__}); nothing was uploaded."
    if response.status_code != 200:
        return False, f"The Jovian service at {api_url} refused the API key (HTTP {response.status_code}). Run `jovian configure` again."
    return True, f"Jovian is reachable at {api_url} and the API key is valid."
