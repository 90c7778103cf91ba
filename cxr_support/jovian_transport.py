"""Support code: whether Jovian is configured and reachable (lessons need not read this).

It is checked before any upload. Every talk with the service runs in a worker thread with a
wall-clock deadline (``run_with_deadline``): a server that trickles its answer or stalls on
an upload cannot hang a notebook, because the client's own timeouts bound each read, not the
whole call, and its uploads have none. Never prints or returns the API key.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cxr_support.switches import parse_bool

DEFAULT_API_URL = "https://api.jovian.com/"


def jovian_credentials_path() -> Path:
    """Where the Jovian client keeps its API key (``jovian configure`` writes it)."""
    return Path(os.path.expanduser("~")) / ".jovian" / "credentials.json"


def run_with_deadline(work: Callable[[], Any], deadline_s: float) -> str | None:
    """Run ``work()`` in a daemon thread for at most ``deadline_s`` seconds.

    None when it finished, else why not.
    """
    # The reason names only the kind of error (an exception's text may quote a key). A call that
    # overruns is abandoned, not stopped (Python cannot stop a thread): it may still finish in the
    # background.
    if not (isinstance(deadline_s, (int, float)) and math.isfinite(deadline_s) and deadline_s > 0):
        raise ValueError(f"deadline_s must be a positive number of seconds, got {deadline_s!r}")
    failure: list[str] = []

    def target() -> None:
        try:
            work()
        # reported to the caller, whatever it was (SystemExit from a client too)
        except BaseException as err:
            failure.append(type(err).__name__)

    worker = threading.Thread(target=target, name="jovian-worker", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        return f"no complete answer within {deadline_s:g} s; the call was abandoned"
    return failure[0] if failure else None


def jovian_switch() -> tuple[bool, str]:
    """(allowed, reason) from CXR_JOVIAN.

    Unset or 1/true/yes/on allow Jovian, 0/false/no/off switch it off.
    """
    text = os.environ.get("CXR_JOVIAN", "")
    try:
        allowed = parse_bool(text) if text.strip() else True
    except ValueError:
        return False, (f"CXR_JOVIAN={text!r} is not valid: use 0 to switch Jovian off, "
                       "or 1 (or leave it unset) to allow it. Not logged.")
    return ((True, "") if allowed
            else (False, f"Jovian is switched off (CXR_JOVIAN={text.strip()})."))


def read_credentials(path: Path) -> tuple[dict[str, str] | None, str]:
    """(credentials, "") with a string API_KEY and API_URL, or (None, why not and how to fix it)."""
    fix = "Run `jovian configure` again."
    try:
        creds = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, (f"No Jovian credentials ({path} does not exist). "
                      "Run `jovian configure` once to add your API key.")
    except (OSError, ValueError) as err:  # ValueError covers bad JSON and bad UTF-8
        return None, (f"The Jovian credentials file {path} is unreadable "
                      f"({type(err).__name__}). {fix}")
    if not isinstance(creds, dict):
        return None, (f"The Jovian credentials file {path} holds a JSON "
                      f"{type(creds).__name__}, not an object. {fix}")
    key, api_url = creds.get("API_KEY"), creds.get("API_URL") or DEFAULT_API_URL
    if not key:
        return None, f"{path} holds no API key. Run `jovian configure` to add one."
    if not isinstance(key, str) or not isinstance(api_url, str):
        return None, f"{path} has an API_KEY or API_URL that is not text. {fix}"
    return {"API_KEY": key, "API_URL": api_url}, ""


def jovian_status(timeout_s: float = 5.0, creds_path: Path | None = None) -> tuple[bool, str]:
    """(ready, reason): True only when a key is configured and the Jovian API accepts it.

    The API must answer within ``timeout_s`` in all. Never prints or returns the key itself.
    """
    allowed, reason = jovian_switch()
    if not allowed:
        return False, reason
    path = creds_path or jovian_credentials_path()
    creds, reason = read_credentials(path)
    if creds is None:
        return False, reason
    import requests

    api_url, answer = creds["API_URL"], {}

    def ask() -> None:
        url, headers = (api_url.rstrip("/") + "/user/profile",
                        {"Authorization": "Bearer " + creds["API_KEY"]})
        answer["status"] = requests.get(url, headers=headers, timeout=timeout_s).status_code

    failure = run_with_deadline(ask, timeout_s)
    if failure:
        return False, (f"The Jovian service at {api_url} did not answer ({failure}); "
                       "nothing was uploaded.")
    if answer["status"] != 200:
        return False, (f"The Jovian service at {api_url} refused the API key "
                       f"(HTTP {answer['status']}). Run `jovian configure` again.")
    return True, f"Jovian is reachable at {api_url} and the API key is valid."
