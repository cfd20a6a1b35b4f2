"""The REST front end: a thin FastAPI layer over :class:`catalog.service.CatalogService`.

Everything lives under ``/api/v1`` (plus ``GET /health``). Errors have one shape,
``{"error": {"type": <CatalogError class name>, "message": <one line>}}``, with the status of
``CatalogError.http_status``; FastAPI's own validation errors become ``InvalidInputError`` (422)
and unexpected failures ``CatalogError`` (500), without stack traces. Endpoints are plain
``def`` so FastAPI runs the blocking service calls in its threadpool.

Security: every request but ``GET``/``HEAD`` needs ``Authorization: Bearer <token>`` (401
without it, with ``WWW-Authenticate: Bearer``; 403 with a wrong one), the reads under ``/api/v1``
too when ``api_read_auth`` is set; ``/health`` and the docs stay open. The token is
:func:`resolve_api_token`'s. Request bodies are capped at ``rest_max_body_bytes`` (413), checked on
``Content-Length`` and counted while a chunked body streams in. 405 answers carry ``Allow``.
"""

from __future__ import annotations

import enum
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.client import TOKEN_FILE, read_token_file
from api.metrics import metrics_registry, render
from catalog.cache import CacheStats, TtlAction
from catalog.config import Settings
from catalog.exceptions import (
    CatalogError,
    InvalidInputError,
    NoSuchPathError,
    NotFoundError,
    UdbError,
)
from catalog.service import CatalogService
from catalog.serving import ClientView
from catalog.views import (
    JOB_STATES,
    TransformJobOut,
    DatabaseDetail,
    DatabaseSummary,
    LocationOwner,
    PartitionPage,
    SyncReport,
    TableDetail,
    TableSummary,
)

API_PREFIX = "/api/v1"
MAX_PAGE = 1000
#: Database and table names (path parameters), as the service accepts them.
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]*$"
MAX_NAME = 128
#: Longest partition filter (characters) and most attach / mount options per request.
MAX_FILTER = 8192
MAX_OPTIONS = 100
#: Methods that never need the token (unless ``api_read_auth``).
READ_METHODS = frozenset({"GET", "HEAD"})
#: Prometheus scrapes (the token only with ``api_read_auth``).
METRICS_PATH = "/metrics"

log = logging.getLogger(__name__)


# -- the token -----------------------------------------------------------------------------------


def resolve_api_token(settings: Settings) -> str:
    """The REST API's bearer token: ``settings.api_token`` (``CATALOG_API_TOKEN``), else the one
    in ``<data_dir>/api-token``, generated there (mode 0600) on first use. Never logged."""
    if settings.api_token is not None and settings.api_token.get_secret_value().strip():
        return settings.api_token.get_secret_value().strip()
    data_dir = FsPath(settings.data_dir)
    path = data_dir / TOKEN_FILE
    existing = read_token_file(data_dir)
    if existing:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # only the server's user may read it
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = data_dir / f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        try:
            os.link(tmp, path)  # atomic and never replaces: a concurrent start keeps one token
        except FileExistsError:
            raced = read_token_file(data_dir)
            if raced:
                return raced
            os.replace(tmp, path)  # an empty leftover file
    finally:
        if tmp.exists():
            tmp.unlink()
    return token


# -- wire schemas (the answers are the service's own types, catalog.views) ----------------------


class ErrorInfo(BaseModel):
    type: str = Field(description="CatalogError subclass name, e.g. NoSuchDatabaseError")
    message: str
    report: dict[str, Any] | None = Field(
        default=None, description="the sync report, when a sync could not read its UDB")


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorInfo


def _few_options(value: Any) -> Any:
    if isinstance(value, Mapping) and len(value) > MAX_OPTIONS:
        raise ValueError(f"at most {MAX_OPTIONS} options per request (got {len(value)})")
    return value


class AttachRequest(BaseModel):
    """Attach ``source_db`` of an under-database as ``name`` (default: the source name)."""

    udb_type: str = Field(min_length=1, examples=["hive"])
    uri: str = Field(min_length=1, examples=["thrift://metastore:9083"])
    source_db: str = Field(min_length=1, examples=["sales"])
    name: str | None = Field(default=None, description="name in Strata (default: source_db)")
    options: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_OPTIONS,
        description=f"attach options (at most {MAX_OPTIONS})")

    _check_options = field_validator("options", mode="before")(_few_options)


class TransformRequest(BaseModel):
    """Transform partitions of a table into Parquet (all of them by default)."""

    db: str = Field(min_length=1, max_length=MAX_NAME, examples=["sales"])
    table: str = Field(min_length=1, max_length=MAX_NAME, examples=["store_sales"])
    definition: str | None = Field(
        default=None, max_length=4096,
        description="e.g. file.count.max=10; file.size.min=256MB; "
                    "file.parquet.compression=zstd (over the database's transform.definition)",
        examples=["file.size.min=256MB; file.parquet.compression=zstd"])
    partitions: list[Annotated[str, Field(min_length=1, max_length=4096)]] | None = Field(
        default=None, max_length=MAX_PAGE * 100,
        description="partition names (k=v/k2=v2); default: every partition")


class MountRequest(BaseModel):
    """Mount the storage at ``ufs_uri`` on namespace ``path``."""

    path: str = Field(min_length=1, examples=["/lake"])
    ufs_uri: str = Field(min_length=1, examples=["s3://bucket/prefix", "file:///data/lake"])
    options: dict[str, str] = Field(default_factory=dict, max_length=MAX_OPTIONS, examples=[{
        "s3.endpoint": "http://127.0.0.1:9000", "s3.aws-access-key": "KEY",
        "s3.aws-secret-key": "SECRET", "s3.path-style-access": "true", "readonly": "true"}])

    _check_options = field_validator("options", mode="before")(_few_options)


class MountOut(BaseModel):
    path: str
    ufs_uri: str
    options: dict[str, str] = Field(description="secret values redacted")
    readonly: bool
    builtin: bool = Field(description="the catalog's own root (/catalog)")
    created_at: float


class FsEntry(BaseModel):
    path: str
    name: str
    is_dir: bool
    size: int
    mtime_ns: int
    ufs_uri: str | None
    mount_point: bool


class CacheUsage(BaseModel):
    """Capacity, use and hit ratio of the block store, a tier or a directory."""

    capacity_bytes: int = Field(description="quota")
    used_bytes: int = Field(description="bytes of committed blocks")
    blocks: int
    pinned_bytes: int = Field(description="bytes of pinned blocks (never evicted)")
    hit_ratio: float | None = Field(
        description="block reads served from the cache / all block reads since the server "
                    "started; of a tier: the share served from this tier (the tiers add up to "
                    "the total); null for a directory (counted per tier)")


class CacheDirReport(CacheUsage):
    path: str


class CacheTierReport(CacheUsage):
    alias: str = Field(examples=["MEM", "SSD", "HDD"])
    dirs: list[CacheDirReport]


class CacheReport(CacheUsage):
    """The block store, its tiers (fastest first) and their directories."""

    tiers: list[CacheTierReport]


class CacheActionOut(BaseModel):
    """What a cache command did to the files at ``path``."""

    path: str
    action: str = Field(examples=["pin", "unpin", "free", "load", "persist", "set-ttl"])
    blocks: int | None = Field(default=None,
                               description="blocks pinned / unpinned / given the TTL now")
    bytes: int | None = Field(default=None, description="bytes freed (free) or read (load)")
    files: int | None = Field(default=None, description="files persisted (persist)")


def cache_report(stats: CacheStats) -> CacheReport:
    """The report of ``catalogctl cache report`` (and ``GET /api/v1/cache``) from the store's
    statistics."""
    reads = stats.hits + stats.misses
    tiers = [CacheTierReport(
        alias=t.alias, capacity_bytes=t.capacity_bytes, used_bytes=t.used_bytes, blocks=t.blocks,
        pinned_bytes=t.pinned_bytes, hit_ratio=t.hits / reads if reads else 0.0,
        dirs=[CacheDirReport(path=str(d.path), capacity_bytes=d.capacity_bytes,
                             used_bytes=d.used_bytes, blocks=d.blocks,
                             pinned_bytes=d.pinned_bytes, hit_ratio=None) for d in t.dirs])
        for t in stats.tiers]
    return CacheReport(capacity_bytes=sum(t.capacity_bytes for t in tiers),
                       used_bytes=sum(t.used_bytes for t in tiers),
                       blocks=sum(t.blocks for t in tiers),
                       pinned_bytes=sum(t.pinned_bytes for t in tiers),
                       hit_ratio=stats.hit_ratio, tiers=tiers)


class Health(BaseModel):
    status: str
    databases: int


class Listener(BaseModel):
    name: str = Field(description="rest, thrift, thrift-trino")
    protocol: str = Field(description="http | thrift")
    host: str
    port: int


class ScheduledSync(BaseModel):
    db: str
    interval_s: float
    next_sync_at: datetime | None
    failures: int = Field(description="failed periodic syncs in a row")
    retry_at: datetime | None = Field(description="when a failed sync is retried")


class SchedulerState(BaseModel):
    running: bool
    syncs: list[ScheduledSync]


class ServiceStatus(BaseModel):
    """The service: its listeners, databases (with their last sync) and periodic sync."""

    status: str
    listeners: list[Listener] = Field(description="empty when not known (an embedded app)")
    scheduler: SchedulerState | None = Field(description="null when no scheduler runs")
    databases: list[DatabaseSummary]


JobState = enum.Enum("JobState", {s.upper(): s for s in JOB_STATES}, type=str)  # type: ignore[misc]

Db = Annotated[str, Path(pattern=NAME_PATTERN, max_length=MAX_NAME,
                         description="database name: letters, digits, '_' and '-'")]
TableName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=MAX_NAME,
                                description="table name: letters, digits, '_' and '-'")]

NsPath = Annotated[str, Query(min_length=1, max_length=4096,
                              description="a namespace path: a file or a directory")]

View = Annotated[ClientView, Query(
    description="whose spelling of locations: verbatim (Spark, Hive, Presto) or trino "
                "(local file: locations as local:///)")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": desc} for code, desc in (
        (400, "malformed request (a body that is not JSON, a bad Content-Length)"),
        (401, "no bearer token (Authorization: Bearer <token>)"),
        (403, "wrong token, or refused by the server's policy (allowed roots, metastores)"),
        (404, "unknown database, table or path"), (405, "read-only mount, or method not allowed"),
        (409, "already exists, or in use"),
        (413, "request body too large"),
        (422, "invalid input"),
        (502, "under-database or under storage unreachable or failing"),
        (500, "internal error"))}


# -- conversions ---------------------------------------------------------------------------------


def _error(status: int, type_name: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"error": {"type": type_name, "message": message, **extra}})


def _allowed_methods(app: FastAPI, scope: Scope) -> str:
    """The methods some route accepts at the path of ``scope`` (the ``Allow`` header)."""
    methods: set[str] = set()
    for route in app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(scope)[0] != Match.NONE:
            methods |= set(route_methods)
    return ", ".join(sorted(methods))


class _Auth:
    """Bearer-token check before anything else runs (and before any body is read)."""

    def __init__(self, app: ASGIApp, token: str, read_auth: bool) -> None:
        self.app = app
        self.token = token.encode()
        self.read_auth = read_auth

    def _guarded(self, scope: Scope) -> bool:
        if scope["method"] not in READ_METHODS:
            return True
        path: str = scope["path"]
        return self.read_auth and (path == API_PREFIX or path.startswith(API_PREFIX + "/")
                                   or path == METRICS_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._guarded(scope):
            given = None
            for key, value in scope["headers"]:
                if key == b"authorization":
                    scheme, _, credentials = value.partition(b" ")
                    if scheme.lower() == b"bearer" and credentials.strip():
                        given = credentials.strip()
                    break
            if given is None:
                answer = _error(401, "PermissionDeniedError",
                                "authentication required: send 'Authorization: Bearer <token>' "
                                "(catalogctl finds the token in the server's data dir, file "
                                f"{TOKEN_FILE}, or takes --token / $CATALOG_API_TOKEN)")
                answer.headers["WWW-Authenticate"] = 'Bearer realm="strata"'
                await answer(scope, receive, send)
                return
            if not hmac.compare_digest(given, self.token):
                await _error(403, "PermissionDeniedError", "invalid API token")(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class _BodyLimit:
    """Refuses bodies over ``max_bytes`` (413): at once on ``Content-Length``, else as soon as
    the streamed (chunked) bytes pass the limit; never buffers more than that."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> JSONResponse:
        return _error(413, "InvalidInputError",
                      f"request body larger than {self.max_bytes} bytes "
                      "(CATALOG_REST_MAX_BODY_BYTES)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _error(400, "InvalidInputError", "invalid Content-Length")(
                        scope, receive, send)
                    return
                if length > self.max_bytes:
                    await self._too_large()(scope, receive, send)
                    return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to the cut body: ours replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._too_large()(scope, receive, send)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts) or "invalid request"


def _sync_answer(report: SyncReport) -> SyncReport | JSONResponse:
    if report.errors:
        return _error(UdbError.http_status, UdbError.__name__,
                      f"sync of '{report.db}' could not read its under-database (last good "
                      f"state still served): {'; '.join(report.errors)}",
                      report=report.to_dict())
    return report


# -- the application -----------------------------------------------------------------------------


def create_app(service: CatalogService, *, token: str | None = None,
               status: Callable[[], Mapping[str, Any]] | None = None) -> FastAPI:
    """The REST API over ``service`` (docs at ``/docs``, schema at ``/openapi.json``).

    ``token`` is the bearer token of the mutating endpoints (default:
    :func:`resolve_api_token` of the service's settings); ``status`` answers the server-level
    part of ``GET /api/v1/status`` (``listeners``, ``scheduler``), when there is a server.
    """
    settings = service.settings
    if token is None:
        token = resolve_api_token(settings)
    if not token:
        raise ValueError("the REST API needs a non-empty token")
    app = FastAPI(title="Strata catalog", version="1", responses=_ERRORS,
                  description="Attach databases of Hive Metastores and directories, sync them, "
                              "and browse their tables and partitions. Every request but "
                              "GET/HEAD needs 'Authorization: Bearer <token>' (the reads too "
                              "when CATALOG_API_READ_AUTH is set).")
    app.add_middleware(_BodyLimit, max_bytes=settings.rest_max_body_bytes)
    app.add_middleware(_Auth, token=token, read_auth=settings.api_read_auth)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}}
            for path, operations in schema.get("paths", {}).items():
                for method, op in operations.items():
                    guarded = method.upper() not in READ_METHODS or (
                        settings.api_read_auth and path.startswith(API_PREFIX + "/"))
                    if guarded:
                        op["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    def _answer(status_code: int, type_name: str, message: str, request: Request,
                headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
        answer = _error(status_code, type_name, message, **extra)
        answer.headers.update(headers or {})
        if status_code == 405:
            answer.headers["Allow"] = _allowed_methods(app, request.scope)
        return answer

    @app.exception_handler(CatalogError)
    async def catalog_error(request: Request, exc: CatalogError) -> JSONResponse:
        return _answer(exc.http_status, type(exc).__name__, str(exc), request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "InvalidInputError", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_name = {404: "NotFoundError", 400: "InvalidInputError"}.get(exc.status_code,
                                                                         "HTTPError")
        return _answer(exc.status_code, type_name,
                       f"{exc.detail}: {request.method} {request.url.path}", request,
                       headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after answering, so the server logs the traceback.
        return _error(500, "CatalogError", f"internal error ({type(exc).__name__})")

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "databases": len(service.list_databases())}

    @app.get(f"{API_PREFIX}/status", response_model=ServiceStatus, tags=["service"])
    def service_status() -> dict[str, Any]:
        """Listeners, attached databases with their last sync, and the periodic sync."""
        server = dict(status()) if status is not None else {}
        return {"status": "ok", "listeners": server.get("listeners", []),
                "scheduler": server.get("scheduler"),
                "databases": service.database_summaries()}

    # -- databases -------------------------------------------------------------------------------

    @app.get(f"{API_PREFIX}/databases", response_model=list[DatabaseSummary], tags=["databases"])
    def list_databases() -> list[DatabaseSummary]:
        """Every attached database with its under-database and last sync."""
        return service.database_summaries()

    @app.get(f"{API_PREFIX}/databases/{{db}}", response_model=DatabaseDetail,
             tags=["databases"])
    def get_database(db: Db) -> DatabaseDetail:
        return service.database_detail(db)

    @app.post(f"{API_PREFIX}/databases", response_model=SyncReport, status_code=201,
              tags=["databases"])
    def attach_database(body: AttachRequest) -> SyncReport:
        """Attach a database; answers the report of its initial sync."""
        return service.attach_database(body.udb_type, body.uri, body.source_db,
                                       name=body.name, options=body.options)

    @app.delete(f"{API_PREFIX}/databases/{{db}}", status_code=204, response_class=Response,
                tags=["databases"])
    def detach_database(db: Db) -> Response:
        service.detach_database(db)
        return Response(status_code=204)

    @app.post(f"{API_PREFIX}/databases/{{db}}/sync", response_model=SyncReport,
              tags=["databases"])
    def sync_database(db: Db) -> Any:
        """Sync now; 502 (with the report) if the under-database could not be read."""
        return _sync_answer(service.sync(db))

    # -- tables ----------------------------------------------------------------------------------

    @app.get(f"{API_PREFIX}/databases/{{db}}/tables", response_model=list[TableSummary],
             tags=["tables"])
    def list_tables(db: Db, view: View = ClientView.VERBATIM) -> list[TableSummary]:
        return service.table_summaries(db, view)

    @app.get(f"{API_PREFIX}/databases/{{db}}/tables/{{table}}", response_model=TableDetail,
             tags=["tables"])
    def get_table(db: Db, table: TableName, view: View = ClientView.VERBATIM) -> TableDetail:
        """The table as engines are served it (layout, location), with its source location."""
        return service.table_detail(db, table, view)

    @app.post(f"{API_PREFIX}/databases/{{db}}/tables/{{table}}/sync",
              response_model=SyncReport, tags=["tables"])
    def sync_table(db: Db, table: TableName) -> Any:
        """Sync one table now; 502 (with the report) if the under-database could not be read."""
        return _sync_answer(service.sync(db, table))

    @app.get(f"{API_PREFIX}/databases/{{db}}/tables/{{table}}/partitions",
             response_model=PartitionPage, tags=["tables"])
    def list_partitions(
        db: Db, table: TableName,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        filter: Annotated[str | None, Query(
            max_length=MAX_FILTER,
            description="Hive partition filter over the partition keys (at most "
                        f"{MAX_FILTER} characters): comparisons (=, !=, <>, <, <=, >, >=), "
                        "LIKE, IN, BETWEEN, IS [NOT] NULL, combined with AND, OR, NOT and "
                        "parentheses; string literals in quotes, e.g. "
                        "dt >= '2024-01-01' and h = 3")] = None,
        view: View = ClientView.VERBATIM,
    ) -> PartitionPage:
        """Partitions in name order, paged, optionally filtered, as served."""
        names = service.select_partition_names(db, table, filter_text=filter)
        return PartitionPage(total=len(names), offset=offset, limit=limit,
                             partitions=service.partition_outs(
                                 db, table, names[offset:offset + limit], view))

    @app.get(f"{API_PREFIX}/locations/owner", response_model=LocationOwner, tags=["tables"])
    def location_owner(
        location: Annotated[str, Query(min_length=1, description="a storage URI")],
    ) -> LocationOwner:
        """Which attached table (partition, layout) the data at ``location`` belongs to."""
        owner = service.owner_of(location)
        if owner is None:
            raise NoSuchPathError(f"no attached table owns {location}")
        return owner

    # -- transformations -------------------------------------------------------------------------

    @app.post(f"{API_PREFIX}/transforms", response_model=TransformJobOut, status_code=202,
              tags=["transforms"])
    def submit_transform(body: TransformRequest) -> TransformJobOut:
        """Queue a transformation job; 409 while the table has one queued or running."""
        return service.transforms.submit(body.db, body.table, body.definition, body.partitions)

    @app.get(f"{API_PREFIX}/transforms", response_model=list[TransformJobOut],
             tags=["transforms"])
    def list_transforms(
        db: Annotated[str | None, Query(max_length=MAX_NAME)] = None,
        table: Annotated[str | None, Query(max_length=MAX_NAME)] = None,
        state: Annotated[JobState | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> list[TransformJobOut]:
        """Jobs, newest first, without their per-partition detail."""
        return service.transforms.jobs(db=db, table=table,
                                       state=state.value if state else None, limit=limit)

    @app.get(f"{API_PREFIX}/transforms/{{job_id}}", response_model=TransformJobOut,
             tags=["transforms"])
    def get_transform(job_id: Annotated[int, Path(ge=1, le=2**62)]) -> TransformJobOut:
        """One job with its per-partition progress."""
        return service.transforms.get(job_id)

    @app.post(f"{API_PREFIX}/transforms/{{job_id}}/cancel", response_model=TransformJobOut,
              tags=["transforms"])
    def cancel_transform(job_id: Annotated[int, Path(ge=1, le=2**62)]) -> TransformJobOut:
        """Ask a job to stop; 409 when it has already finished."""
        return service.transforms.cancel(job_id)

    # -- the namespace ---------------------------------------------------------------------------

    @app.get(f"{API_PREFIX}/fs/mounts", response_model=list[MountOut], tags=["fs"])
    def list_mounts() -> list[dict[str, Any]]:
        return [m.public() for m in service.fs.mounts()]

    @app.post(f"{API_PREFIX}/fs/mounts", response_model=MountOut, status_code=201, tags=["fs"])
    def mount(body: MountRequest) -> dict[str, Any]:
        """Mount a storage (checked reachable first); secrets are never shown back."""
        return service.mount(body.path, body.ufs_uri, body.options).public()

    @app.delete(f"{API_PREFIX}/fs/mounts", status_code=204, response_class=Response,
                tags=["fs"])
    def unmount(path: Annotated[str, Query(min_length=1)]) -> Response:
        """Unmount; 409 while an attached database or served table lives under it."""
        service.unmount(path)
        return Response(status_code=204)

    @app.get(f"{API_PREFIX}/fs/ls", response_model=list[FsEntry], tags=["fs"])
    def fs_ls(path: Annotated[str, Query(min_length=1)] = "/") -> list[dict[str, Any]]:
        return [e.to_dict() for e in service.fs.ls(path)]

    @app.get(f"{API_PREFIX}/fs/stat", response_model=FsEntry, tags=["fs"])
    def fs_stat(path: Annotated[str, Query(min_length=1)]) -> dict[str, Any]:
        return service.fs.stat(path).to_dict()

    @app.get(f"{API_PREFIX}/fs/cat", tags=["fs"], response_class=StreamingResponse,
             responses={200: {"content": {"application/octet-stream": {}}}})
    def fs_cat(path: Annotated[str, Query(min_length=1)],
               offset: Annotated[int, Query(ge=0)] = 0,
               length: Annotated[int | None, Query(ge=0)] = None) -> StreamingResponse:
        """A file's bytes (``length`` from ``offset``), streamed."""
        entry = service.fs.stat(path)
        if entry.is_dir:
            raise InvalidInputError(f"'{entry.path}' is a directory")
        reader = service.fs.open_input(path)
        end = entry.size if length is None else min(entry.size, offset + length)

        def chunks() -> Iterator[bytes]:
            with reader:
                reader.seek(offset)
                left = max(0, end - offset)
                while left > 0:
                    data = reader.read(min(left, 1 << 20))
                    if not data:
                        return
                    left -= len(data)
                    yield bytes(data)

        return StreamingResponse(chunks(), media_type="application/octet-stream",
                                 headers={"Content-Length": str(max(0, end - offset))})

    # -- the block store -------------------------------------------------------------------------

    @app.post(f"{API_PREFIX}/fs/pin", response_model=CacheActionOut, tags=["cache"])
    def fs_pin(path: NsPath) -> CacheActionOut:
        """Pin the files at ``path``, cached now or later: their blocks are never evicted."""
        return CacheActionOut(path=path, action="pin", blocks=service.fs.pin(path))

    @app.post(f"{API_PREFIX}/fs/unpin", response_model=CacheActionOut, tags=["cache"])
    def fs_unpin(path: NsPath) -> CacheActionOut:
        """Remove the pin of ``path``."""
        return CacheActionOut(path=path, action="unpin", blocks=service.fs.unpin(path))

    @app.post(f"{API_PREFIX}/fs/free", response_model=CacheActionOut, tags=["cache"])
    def fs_free(path: NsPath) -> CacheActionOut:
        """Drop the cached copies of the files at ``path`` (409 while some are not persisted)."""
        return CacheActionOut(path=path, action="free", bytes=service.fs.free(path))

    @app.post(f"{API_PREFIX}/fs/load", response_model=CacheActionOut, tags=["cache"])
    def fs_load(path: NsPath) -> CacheActionOut:
        """Read the files at ``path`` into the cache."""
        return CacheActionOut(path=path, action="load", bytes=service.fs.load(path))

    @app.post(f"{API_PREFIX}/fs/persist", response_model=CacheActionOut, tags=["cache"])
    def fs_persist(path: NsPath) -> CacheActionOut:
        """Write the files at ``path`` held by the cache only to under storage now."""
        return CacheActionOut(path=path, action="persist", files=service.fs.persist(path))

    @app.post(f"{API_PREFIX}/fs/ttl", response_model=CacheActionOut, tags=["cache"])
    def fs_set_ttl(path: NsPath,
                   seconds: Annotated[float, Query(ge=0, le=10 * 365 * 86400,
                                                   description="time to live once cached")],
                   action: Annotated[TtlAction, Query(
                       description="free: drop the cached blocks; delete: delete the file")]
                   = TtlAction.FREE) -> CacheActionOut:
        """Files at ``path`` expire ``seconds`` after they were cached."""
        return CacheActionOut(path=path, action="set-ttl",
                              blocks=service.fs.set_ttl(path, seconds, action))

    @app.get(f"{API_PREFIX}/cache", response_model=CacheReport, tags=["cache"])
    def cache() -> CacheReport:
        """Per tier and directory: capacity, used, blocks, pinned bytes, hit ratio."""
        store = service.fs.cache
        if store is None:
            raise NotFoundError("this server has no block store")
        return cache_report(store.stats())

    # -- Prometheus ------------------------------------------------------------------------------

    registry = metrics_registry(lambda: service.fs)

    @app.get(METRICS_PATH, include_in_schema=False)
    def metrics(request: Request) -> Response:
        """Prometheus text format: the block store, the S3 gateway, the process."""
        body, content_type = render(registry, request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    return app
