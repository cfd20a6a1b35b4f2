"""The REST front end: a thin FastAPI layer over :class:`catalog.service.CatalogService`.

Everything lives under ``/api/v1`` (plus ``GET /health``). Errors have one shape,
``{"error": {"type": <CatalogError class name>, "message": <one line>}}``, with the status of
``CatalogError.http_status``; FastAPI's own validation errors become ``InvalidInputError`` (422)
and unexpected failures ``CatalogError`` (500), without stack traces. Endpoints are plain
``def`` so FastAPI runs the blocking service calls in its threadpool.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from catalog.exceptions import CatalogError, InvalidInputError, NoSuchPathError, UdbError
from catalog.service import CatalogService
from catalog.serving import ClientView
from catalog.views import (
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


# -- wire schemas (the answers are the service's own types, catalog.views) ----------------------


class ErrorInfo(BaseModel):
    type: str = Field(description="CatalogError subclass name, e.g. NoSuchDatabaseError")
    message: str
    report: dict[str, Any] | None = Field(
        default=None, description="the sync report, when a sync could not read its UDB")


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorInfo


class AttachRequest(BaseModel):
    """Attach ``source_db`` of an under-database as ``name`` (default: the source name)."""

    udb_type: str = Field(min_length=1, examples=["hive"])
    uri: str = Field(min_length=1, examples=["thrift://metastore:9083"])
    source_db: str = Field(min_length=1, examples=["sales"])
    name: str | None = None
    options: dict[str, str] = Field(default_factory=dict)


class MountRequest(BaseModel):
    """Mount the storage at ``ufs_uri`` on namespace ``path``."""

    path: str = Field(min_length=1, examples=["/lake"])
    ufs_uri: str = Field(min_length=1, examples=["s3://bucket/prefix", "file:///data/lake"])
    options: dict[str, str] = Field(default_factory=dict, examples=[{
        "s3.endpoint": "http://127.0.0.1:9000", "s3.aws-access-key": "KEY",
        "s3.aws-secret-key": "SECRET", "s3.path-style-access": "true", "readonly": "true"}])


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


class Health(BaseModel):
    status: str
    databases: int


View = Annotated[ClientView, Query(
    description="whose spelling of locations: verbatim (Spark, Hive, Presto) or trino "
                "(local file: locations as local:///)")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": desc} for code, desc in (
        (404, "unknown database, table or path"), (405, "read-only mount"),
        (409, "already exists, or in use"),
        (422, "invalid input"),
        (502, "under-database or under storage unreachable or failing"),
        (500, "internal error"))}


# -- conversions ---------------------------------------------------------------------------------


def _error(status: int, type_name: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"error": {"type": type_name, "message": message, **extra}})


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _sync_answer(report: SyncReport) -> SyncReport | JSONResponse:
    if report.errors:
        return _error(UdbError.http_status, UdbError.__name__,
                      f"sync of '{report.db}' could not read its under-database (last good "
                      f"state still served): {'; '.join(report.errors)}",
                      report=report.to_dict())
    return report


# -- the application -----------------------------------------------------------------------------


def create_app(service: CatalogService) -> FastAPI:
    """The REST API over ``service`` (docs at ``/docs``, schema at ``/openapi.json``)."""
    app = FastAPI(title="Strata catalog", version="1", responses=_ERRORS,
                  description="Attach databases of Hive Metastores and directories, sync them, "
                              "and browse their tables and partitions.")

    @app.exception_handler(CatalogError)
    async def catalog_error(request: Request, exc: CatalogError) -> JSONResponse:
        return _error(exc.http_status, type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "InvalidInputError", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_name = "NotFoundError" if exc.status_code == 404 else "HTTPError"
        return _error(exc.status_code, type_name,
                      f"{exc.detail}: {request.method} {request.url.path}")

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after answering, so the server logs the traceback.
        return _error(500, "CatalogError", f"internal error ({type(exc).__name__})")

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "databases": len(service.list_databases())}

    # -- databases -------------------------------------------------------------------------------

    @app.get(f"{API_PREFIX}/databases", response_model=list[DatabaseSummary], tags=["databases"])
    def list_databases() -> list[DatabaseSummary]:
        """Every attached database with its under-database and last sync."""
        return service.database_summaries()

    @app.get(f"{API_PREFIX}/databases/{{db}}", response_model=DatabaseDetail,
             tags=["databases"])
    def get_database(db: str) -> DatabaseDetail:
        return service.database_detail(db)

    @app.post(f"{API_PREFIX}/databases", response_model=SyncReport, status_code=201,
              tags=["databases"])
    def attach_database(body: AttachRequest) -> SyncReport:
        """Attach a database; answers the report of its initial sync."""
        return service.attach_database(body.udb_type, body.uri, body.source_db,
                                       name=body.name, options=body.options)

    @app.delete(f"{API_PREFIX}/databases/{{db}}", status_code=204, response_class=Response,
                tags=["databases"])
    def detach_database(db: str) -> Response:
        service.detach_database(db)
        return Response(status_code=204)

    @app.post(f"{API_PREFIX}/databases/{{db}}/sync", response_model=SyncReport,
              tags=["databases"])
    def sync_database(db: str) -> Any:
        """Sync now; 502 (with the report) if the under-database could not be read."""
        return _sync_answer(service.sync(db))

    # -- tables ----------------------------------------------------------------------------------

    @app.get(f"{API_PREFIX}/databases/{{db}}/tables", response_model=list[TableSummary],
             tags=["tables"])
    def list_tables(db: str, view: View = ClientView.VERBATIM) -> list[TableSummary]:
        return service.table_summaries(db, view)

    @app.get(f"{API_PREFIX}/databases/{{db}}/tables/{{table}}", response_model=TableDetail,
             tags=["tables"])
    def get_table(db: str, table: str, view: View = ClientView.VERBATIM) -> TableDetail:
        """The table as engines are served it (layout, location), with its source location."""
        return service.table_detail(db, table, view)

    @app.post(f"{API_PREFIX}/databases/{{db}}/tables/{{table}}/sync",
              response_model=SyncReport, tags=["tables"])
    def sync_table(db: str, table: str) -> Any:
        """Sync one table now; 502 (with the report) if the under-database could not be read."""
        return _sync_answer(service.sync(db, table))

    @app.get(f"{API_PREFIX}/databases/{{db}}/tables/{{table}}/partitions",
             response_model=PartitionPage, tags=["tables"])
    def list_partitions(
        db: str, table: str,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        filter: Annotated[str | None, Query(
            description="Hive partition filter, e.g. dt >= '2024-01-01' and h = 3")] = None,
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

    return app
