"""A small client of the Strata REST API (``/api/v1``), used by ``catalogctl``.

Error bodies ``{"error": {"type", "message"}}`` come back as the same
:class:`~catalog.exceptions.CatalogError` subclass the server raised (by class name; otherwise by
HTTP status; otherwise ``CatalogError``), so callers handle remote and local errors alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from catalog import exceptions
from catalog.exceptions import CatalogError, InvalidInputError

DEFAULT_SERVER = "http://127.0.0.1:8080"
API = "/api/v1"
#: The file in the data dir holding the REST API's bearer token (mode 0600).
TOKEN_FILE = "api-token"
DEFAULT_DATA_DIR = "./strata-data"

_BY_STATUS: dict[int, type[CatalogError]] = {
    401: exceptions.PermissionDeniedError, 403: exceptions.PermissionDeniedError,
    413: exceptions.InvalidInputError,
    404: exceptions.NotFoundError, 405: exceptions.ReadOnlyError,
    409: exceptions.AlreadyExistsError, 422: exceptions.InvalidInputError,
    502: exceptions.UdbError,
}


def error_from_response(status: int, body: Any) -> CatalogError:
    """The CatalogError an error response stands for."""
    info = body.get("error") if isinstance(body, dict) else None
    if not isinstance(info, dict) or "message" not in info:
        return _by_status(status)(f"HTTP {status}: {str(body)[:200]}")
    cls = getattr(exceptions, str(info.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, CatalogError)):
        cls = _by_status(status)
    # Subclasses build their message from parts (NoSuchTableError(db, table)); set it as is.
    err = cls.__new__(cls)
    Exception.__init__(err, str(info["message"]))
    return err


def read_token_file(data_dir: str | os.PathLike[str]) -> str | None:
    """The token in ``<data_dir>/api-token``; None if there is none (or it cannot be read)."""
    try:
        text = (Path(data_dir) / TOKEN_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def find_token(token: str | None = None, data_dir: str | os.PathLike[str] | None = None
               ) -> str | None:
    """The token a client sends: ``token``, else ``$CATALOG_API_TOKEN``, else the token file of
    ``data_dir`` (else ``$CATALOG_DATA_DIR``, else ``./strata-data``) of a server on this host."""
    if token:
        return token
    env = os.environ.get("CATALOG_API_TOKEN", "").strip()
    if env:
        return env
    return read_token_file(data_dir or os.environ.get("CATALOG_DATA_DIR") or DEFAULT_DATA_DIR)


def _by_status(status: int) -> type[CatalogError]:
    return _BY_STATUS.get(status, CatalogError)


def _seg(name: str) -> str:
    return quote(name, safe="")


class CatalogClient:
    """Calls of the REST API; every failure raises a :class:`CatalogError`.

    ``timeout`` bounds each request (attach and sync of a large database can take a while);
    an unreachable server raises ``CatalogError("cannot reach Strata at <url>: ...")``.
    ``token`` is sent as ``Authorization: Bearer`` on every request (see :func:`find_token`).
    """

    def __init__(self, base_url: str = DEFAULT_SERVER, timeout: float = 300.0,
                 token: str | None = None) -> None:
        if "://" not in base_url:
            base_url = f"http://{base_url}"
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers,
                                  timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))

    def __repr__(self) -> str:  # never the token
        return f"CatalogClient({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CatalogClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, json: Any = None,
                 params: Mapping[str, Any] | None = None) -> Any:
        try:
            resp = self._http.request(method, path, json=json, params=params)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
            raise InvalidInputError(f"invalid server URL '{self.base_url}': {e}") from e
        except httpx.TimeoutException as e:
            raise CatalogError(f"Strata at {self.base_url} did not answer within "
                               f"{self.timeout:g}s") from e
        except httpx.TransportError as e:
            raise CatalogError(f"cannot reach Strata at {self.base_url}: {e}") from e
        if resp.status_code == 204:
            return None
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        if resp.status_code >= 400:
            raise error_from_response(resp.status_code, body)
        return body

    # -- calls -----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/health")
        return result

    def status(self) -> dict[str, Any]:
        """Listeners, databases with their last sync, and the scheduler."""
        result: dict[str, Any] = self._request("GET", f"{API}/status")
        return result

    def list_databases(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", f"{API}/databases")
        return result

    def get_database(self, db: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"{API}/databases/{_seg(db)}")
        return result

    def attach_database(self, udb_type: str, uri: str, source_db: str, *,
                        name: str | None = None,
                        options: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Attach; answers the sync report."""
        body = {"udb_type": udb_type, "uri": uri, "source_db": source_db, "name": name,
                "options": dict(options or {})}
        result: dict[str, Any] = self._request("POST", f"{API}/databases", json=body)
        return result

    def detach_database(self, db: str) -> None:
        self._request("DELETE", f"{API}/databases/{_seg(db)}")

    def sync(self, db: str, table: str | None = None) -> dict[str, Any]:
        """Sync a database or one table; a UDB that cannot be read raises ``UdbError``."""
        path = f"{API}/databases/{_seg(db)}"
        if table is not None:
            path += f"/tables/{_seg(table)}"
        result: dict[str, Any] = self._request("POST", f"{path}/sync")
        return result

    def list_tables(self, db: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", f"{API}/databases/{_seg(db)}/tables")
        return result

    def get_table(self, db: str, table: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "GET", f"{API}/databases/{_seg(db)}/tables/{_seg(table)}")
        return result

    def partitions(self, db: str, table: str, *, offset: int = 0, limit: int = 100,
                   filter: str | None = None) -> dict[str, Any]:
        """One page: ``{"total", "offset", "limit", "partitions": [...]}``."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if filter is not None:
            params["filter"] = filter
        result: dict[str, Any] = self._request(
            "GET", f"{API}/databases/{_seg(db)}/tables/{_seg(table)}/partitions", params=params)
        return result

    # -- transformations -------------------------------------------------------------------------

    def transform(self, db: str, table: str, definition: str | None = None,
                  partitions: Sequence[str] | None = None) -> dict[str, Any]:
        """Submit a transformation job; its JSON (``id``, ``state``...)."""
        body: dict[str, Any] = {"db": db, "table": table}
        if definition is not None:
            body["definition"] = definition
        if partitions:
            body["partitions"] = list(partitions)
        result: dict[str, Any] = self._request("POST", f"{API}/transforms", json=body)
        return result

    def transform_job(self, job_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"{API}/transforms/{int(job_id)}")
        return result

    def transform_jobs(self, *, db: str | None = None, table: str | None = None,
                       state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        for key, value in (("db", db), ("table", table), ("state", state)):
            if value is not None:
                params[key] = value
        result: list[dict[str, Any]] = self._request("GET", f"{API}/transforms", params=params)
        return result

    def cancel_transform(self, job_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"{API}/transforms/{int(job_id)}/cancel")
        return result

    # -- the namespace ---------------------------------------------------------------------------

    def mounts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", f"{API}/fs/mounts")
        return result

    def mount(self, path: str, ufs_uri: str,
              options: Mapping[str, str] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", f"{API}/fs/mounts",
            json={"path": path, "ufs_uri": ufs_uri, "options": dict(options or {})})
        return result

    def unmount(self, path: str) -> None:
        self._request("DELETE", f"{API}/fs/mounts", params={"path": path})

    def fs_ls(self, path: str = "/") -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", f"{API}/fs/ls",
                                                     params={"path": path})
        return result

    def fs_stat(self, path: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"{API}/fs/stat", params={"path": path})
        return result

    def fs_cat(self, path: str) -> Iterator[bytes]:
        """A file's bytes, streamed in chunks."""
        try:
            with self._http.stream("GET", f"{API}/fs/cat", params={"path": path}) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    try:
                        body: Any = resp.json()
                    except ValueError:
                        body = resp.text
                    raise error_from_response(resp.status_code, body)
                yield from resp.iter_bytes()
        except httpx.TimeoutException as e:
            raise CatalogError(f"Strata at {self.base_url} did not answer within "
                               f"{self.timeout:g}s") from e
        except httpx.TransportError as e:
            raise CatalogError(f"cannot reach Strata at {self.base_url}: {e}") from e

    # -- the block store -------------------------------------------------------------------------

    def cache_action(self, command: str, path: str, *, seconds: float | None = None,
                     ttl_action: str | None = None) -> dict[str, Any]:
        """``pin``, ``unpin``, ``free``, ``load``, ``persist`` or ``ttl`` (with ``seconds`` and
        ``ttl_action``: free | delete) of the files at a namespace path; what it did
        (``blocks``, ``bytes`` or ``files``)."""
        if command not in ("pin", "unpin", "free", "load", "persist", "ttl"):
            raise InvalidInputError(f"unknown cache command '{command}'")
        params: dict[str, Any] = {"path": path}
        if command == "ttl":
            params["seconds"] = seconds
            params["action"] = ttl_action or "free"
        result: dict[str, Any] = self._request("POST", f"{API}/fs/{command}", params=params)
        return result

    def cache_report(self) -> dict[str, Any]:
        """Per tier and directory: capacity, used, blocks, pinned bytes, hit ratio."""
        result: dict[str, Any] = self._request("GET", f"{API}/cache")
        return result
