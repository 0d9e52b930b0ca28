"""Push the dashboards to a Grafana through its HTTP API (grafana-client).

The API token comes from the environment (``M3BENCH_GRAFANA_TOKEN``, else ``GRAFANA_TOKEN``) or from a
file, never from the command line (argv is visible to every user of the machine in ``ps``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TOKEN_ENV = ("M3BENCH_GRAFANA_TOKEN", "GRAFANA_TOKEN")
FOLDER_UID = "m3bench"
FOLDER_TITLE = "m3bench"


class PushError(RuntimeError):
    """The dashboards could not be pushed; the message says why and what to do."""


def read_token(token_file: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise PushError(f"cannot read the Grafana token file {token_file}: {e.strerror}") from e
        if not token:
            raise PushError(f"the Grafana token file {token_file} is empty")
        return token
    for name in TOKEN_ENV:
        if environ.get(name):
            return environ[name].strip()
    raise PushError(f"no Grafana token: set {TOKEN_ENV[0]} or pass --token-file (a service-account token)")


def push(
    url: str, token: str, documents: Mapping[str, dict[str, Any]], folder_uid: str = FOLDER_UID
) -> list[str]:
    """Create the folder if missing, then create or overwrite each dashboard; the pushed uids."""
    from grafana_client.api import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    api = GrafanaApi.from_url(url, credential=token, timeout=15.0)
    try:
        try:
            api.folder.get_folder(folder_uid)
        except GrafanaClientError as e:
            if getattr(e, "status_code", None) != 404:
                raise
            api.folder.create_folder(FOLDER_TITLE, uid=folder_uid)
        pushed = []
        for uid, document in documents.items():
            payload = {"dashboard": {**document, "id": None}, "folderUid": folder_uid, "overwrite": True}
            payload["message"] = "m3bench dashboards push"
            api.dashboard.update_dashboard(payload)
            pushed.append(uid)
    except GrafanaException as e:
        raise PushError(f"Grafana at {url} refused: {e}") from e
    except OSError as e:
        raise PushError(f"Grafana at {url} unreachable: {e}") from e
    return pushed
