"""Naming tables in an Iceberg REST catalog, and keeping them current there.

The catalog is addressed as ``rest+http://host:port/path`` (or ``rest+https://``): the
part after ``rest+`` is the catalog's base URL, under which the REST API's ``/v1/`` routes
are. A table the catalog does not list is registered at its newest Quiver metadata file
(``POST .../namespaces/{ns}/register``). A table it lists is moved forward with a table
commit (``POST .../namespaces/{ns}/tables/{table}``): the snapshots it lacks are added,
those Quiver expired are removed and ``main`` is set to the newest one, under the
requirement that ``main`` is still where the catalog said it was, so a concurrent commit
makes this one retry and a table never goes backwards. The catalog then writes its own
metadata file in the table's ``metadata/`` folder (gc keeps the newest such file). A table
the catalog lists at another folder (dropped and created again under the same name) is
dropped from the catalog, never purged, and registered anew.

Credentials are a bearer token or an OAuth2 client credential (``id:secret``), given by
the caller (the command line reads them from flags or the environment); they go only
into request headers and the token request, never into a log line or an error message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from quiver.supertable.iceberg.catalog import CatalogError, Outcome

log = logging.getLogger(__name__)

SCHEME_PREFIX = "rest+"
TIMEOUT_S = 30.0
COMMIT_ATTEMPTS = 5
_DEFAULT_SEPARATOR = "%1F"


def is_rest(uri: str) -> bool:
    return uri.startswith((f"{SCHEME_PREFIX}http://", f"{SCHEME_PREFIX}https://"))


def redacted(uri: str) -> str:
    """``uri`` without user information or query: what log lines and errors may show."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class RestCatalog:
    """One Iceberg REST catalog, reached with ``requests``."""

    def __init__(self, uri: str, *, token: str | None = None, credential: str | None = None,
                 warehouse: str | None = None, timeout: float = TIMEOUT_S) -> None:
        if not is_rest(uri):
            raise CatalogError(f"not a REST catalog URI (rest+http://host:port/path): "
                               f"{redacted(uri)!r}")
        self.uri = redacted(uri)
        self._base = uri[len(SCHEME_PREFIX):].rstrip("/")
        self._token = token or None
        self._credential = credential or None
        self._warehouse = warehouse
        self._timeout = timeout
        self._session = requests.Session()
        self._root: str | None = None
        self._separator = _DEFAULT_SEPARATOR

    # -- HTTP -------------------------------------------------------------------------------

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return self._session.request(method, url, timeout=self._timeout, **kwargs)
        except requests.RequestException as exc:
            # The exception text may quote the URL; only the catalog's redacted URI is shown.
            raise CatalogError(f"catalog {self.uri}: {type(exc).__name__}") from None

    def _failure(self, response: requests.Response, what: str) -> CatalogError:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.reason
        return CatalogError(f"catalog {self.uri}: {what}: HTTP {response.status_code} "
                            f"{message}")

    def _authenticate(self) -> None:
        if self._token is None and self._credential is not None:
            client_id, sep, secret = self._credential.partition(":")
            if not sep:
                client_id, secret = "", self._credential
            response = self._request("POST", f"{self._base}/v1/oauth/tokens", data={
                "grant_type": "client_credentials", "client_id": client_id,
                "client_secret": secret, "scope": "catalog"})
            if response.status_code != 200:
                raise self._failure(response, "OAuth2 token request refused")
            self._token = response.json()["access_token"]
        if self._token is not None:
            self._session.headers["Authorization"] = f"Bearer {self._token}"

    def _routes(self) -> str:
        """The URL the catalog's namespace routes hang from (after ``GET /v1/config``)."""
        if self._root is None:
            self._authenticate()
            params = {"warehouse": self._warehouse} if self._warehouse else None
            response = self._request("GET", f"{self._base}/v1/config", params=params)
            if response.status_code != 200:
                raise self._failure(response, "GET /v1/config")
            config = response.json()
            merged = {**config.get("defaults", {}), **config.get("overrides", {})}
            prefix = merged.get("prefix")
            self._separator = merged.get("namespace-separator") or _DEFAULT_SEPARATOR
            self._root = f"{self._base}/v1/{prefix}" if prefix else f"{self._base}/v1"
        return self._root

    def _ns(self, namespace: str) -> str:
        return self._separator.join(quote(part, safe="") for part in namespace.split("."))

    def _table_url(self, namespace: str, table: str) -> str:
        return f"{self._routes()}/namespaces/{self._ns(namespace)}/tables/{quote(table, safe='')}"

    # -- catalog operations -------------------------------------------------------------------

    def _ensure_namespace(self, namespace: str) -> None:
        root = self._routes()
        response = self._request("GET", f"{root}/namespaces/{self._ns(namespace)}")
        if response.status_code == 200:
            return
        response = self._request("POST", f"{root}/namespaces",
                                 json={"namespace": namespace.split("."), "properties": {}})
        if response.status_code not in (200, 409):
            raise self._failure(response, f"creating namespace {namespace!r}")

    def _load(self, namespace: str, table: str) -> dict[str, Any] | None:
        response = self._request("GET", self._table_url(namespace, table))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._failure(response, f"loading table {namespace}.{table}")
        return response.json()

    def _register_new(self, namespace: str, table: str, location: str) -> None:
        response = self._request(
            "POST", f"{self._routes()}/namespaces/{self._ns(namespace)}/register",
            json={"name": table, "metadata-location": location})
        if response.status_code != 200:
            raise self._failure(response, f"registering table {namespace}.{table}")

    def _drop(self, namespace: str, table: str) -> None:
        response = self._request("DELETE", self._table_url(namespace, table),
                                 params={"purgeRequested": "false"})
        if response.status_code not in (200, 204, 404):
            raise self._failure(response, f"dropping table {namespace}.{table}")

    def location(self, namespace: str, table: str) -> str | None:
        """The metadata file the catalog lists for ``namespace.table``, if any."""
        loaded = self._load(namespace, table)
        return None if loaded is None else loaded.get("metadata-location")

    def register(self, namespace: str, table: str, location: str,
                 document: Callable[[], dict[str, Any]] | None = None) -> Outcome:
        """Lists ``namespace.table`` at ``location``, or brings it forward to that metadata
        (``document()`` reads the file's JSON; without it, it is read from ``location``
        with pyiceberg's file IO)."""
        self._ensure_namespace(namespace)
        ours: dict[str, Any] | None = None
        for _ in range(COMMIT_ATTEMPTS):
            loaded = self._load(namespace, table)
            if loaded is None:
                self._register_new(namespace, table, location)
                return "registered"
            if loaded.get("metadata-location") == location:
                return "unchanged"
            theirs = loaded["metadata"]
            if ours is None:
                ours = document() if document is not None else read_document(location)
            if (theirs.get("location", "").rstrip("/") != ours["location"].rstrip("/")
                    or theirs.get("table-uuid") != ours["table-uuid"]):
                log.info("catalog %s lists %s.%s at another table; registering it anew",
                         self.uri, namespace, table)
                self._drop(namespace, table)
                continue
            body = commit_request(theirs, ours)
            if body is None:
                return "unchanged"
            response = self._request("POST", self._table_url(namespace, table), json=body)
            if response.status_code == 200:
                return "updated"
            if response.status_code != 409:
                raise self._failure(response, f"committing table {namespace}.{table}")
            # Another writer moved it meanwhile: reload and compare again.
        raise CatalogError(f"catalog {self.uri}: table {namespace}.{table} kept moving; "
                           f"gave up after {COMMIT_ATTEMPTS} attempts")


def read_document(location: str) -> dict[str, Any]:
    """A metadata file's JSON, read with pyiceberg's file IO for its scheme."""
    from pyiceberg.io import load_file_io

    try:
        with load_file_io({}, location).new_input(location).open() as stream:
            return json.loads(stream.read())
    except (OSError, ValueError) as exc:
        raise CatalogError(f"cannot read Iceberg metadata {location}: {exc}") from exc


def _snapshot_id(doc: dict[str, Any]) -> int | None:
    current = doc.get("current-snapshot-id")
    return None if current is None or current < 0 else int(current)


def _fields(schema: dict[str, Any]) -> list[Any]:
    return schema.get("fields", [])


def _current_schema(doc: dict[str, Any]) -> dict[str, Any] | None:
    for schema in doc.get("schemas", []):
        if schema.get("schema-id") == doc.get("current-schema-id"):
            return schema
    return None


def commit_request(theirs: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any] | None:
    """The REST table commit taking the catalog's metadata ``theirs`` to Quiver's ``ours``,
    or None when the catalog is already at ``ours``'s snapshot or past it."""
    current, target = _snapshot_id(theirs), _snapshot_id(ours)
    if target is None or (current is not None and current >= target):
        return None
    known = {s["snapshot-id"] for s in theirs.get("snapshots", [])}
    wanted = {s["snapshot-id"] for s in ours.get("snapshots", [])}
    updates: list[dict[str, Any]] = []
    schema = _current_schema(ours)
    their_schema = _current_schema(theirs)
    if schema is not None and (their_schema is None
                               or _fields(their_schema) != _fields(schema)):
        updates += [{"action": "add-schema", "schema": schema,
                     "last-column-id": ours["last-column-id"]},
                    {"action": "set-current-schema", "schema-id": -1}]
    for snapshot in sorted(ours.get("snapshots", []), key=lambda s: s["sequence-number"]):
        if snapshot["snapshot-id"] not in known:
            updates.append({"action": "add-snapshot", "snapshot": snapshot})
    updates.append({"action": "set-snapshot-ref", "ref-name": "main", "type": "branch",
                    "snapshot-id": target})
    expired = sorted(known - wanted)
    if expired:
        updates.append({"action": "remove-snapshots", "snapshot-ids": expired})
    updates.append({"action": "set-properties", "updates": ours.get("properties", {})})
    return {
        "requirements": [
            {"type": "assert-table-uuid", "uuid": ours["table-uuid"]},
            {"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": current},
        ],
        "updates": updates,
    }
