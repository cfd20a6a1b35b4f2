"""The REST front end: a thin FastAPI layer over :class:`catalog.service.CatalogService`.

Everything lives under ``/api/v1`` (plus ``GET /health``). Errors have one shape,
``{"error": {"type": <CatalogError class name>, "message": <one line>}}``, with the status of
``CatalogError.http_status``; FastAPI's own validation errors become ``InvalidInputError`` (422)
and unexpected failures ``CatalogError`` (500), without stack traces. Endpoints are plain
``def`` so FastAPI runs the blocking service calls in its threadpool.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from catalog.exceptions import CatalogError, UdbError
from catalog.models import Database, Partition, Table, partition_name
from catalog.service import CatalogService, SyncReport
from catalog.store import DatabaseRecord, TableRecord

API_PREFIX = "/api/v1"
MAX_PAGE = 1000


# -- wire schemas --------------------------------------------------------------------------------


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


class Counts(BaseModel):
    unchanged: int = 0
    updated: int = 0
    added: int = 0
    removed: int = 0


class SyncReportOut(BaseModel):
    """What one attach or sync did (``SyncReport.to_dict()``)."""

    db: str
    tables: Counts
    partitions: Counts
    errors: list[str]
    warnings: list[str] = Field(
        default_factory=list, description="what the under-database skipped (not a failure)")
    duration_s: float


class DatabaseSummary(BaseModel):
    name: str
    udb_type: str
    uri: str
    source_db: str
    table_count: int
    attached_at: datetime
    last_sync_at: datetime | None
    last_sync: SyncReportOut | None


class DatabaseDetail(DatabaseSummary):
    database: Database
    options: dict[str, str]
    sync_interval_s: float = Field(description="effective periodic sync interval; 0 = disabled")


class TableSummary(BaseModel):
    name: str
    type: str
    location: str | None
    version: int
    partition_count: int
    bypass: bool


class TableDetail(Table):
    """The full table plus what the catalog keeps about it."""

    id: int
    version: int
    partition_count: int
    layout: str
    location: str | None
    bypass: bool
    fingerprint: str | None


class PartitionOut(Partition):
    name: str


class PartitionPage(BaseModel):
    total: int = Field(description="partitions matching the filter")
    offset: int
    limit: int
    partitions: list[PartitionOut]


class Health(BaseModel):
    status: str
    databases: int


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": desc} for code, desc in (
        (404, "unknown database / table"), (409, "already attached"),
        (422, "invalid input"), (502, "under-database unreachable or failing"),
        (500, "internal error"))}


# -- conversions ---------------------------------------------------------------------------------


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _db_summary(service: CatalogService, rec: DatabaseRecord) -> dict[str, Any]:
    return {"name": rec.name, "udb_type": rec.udb_type, "uri": rec.udb_uri,
            "source_db": rec.source_db, "table_count": len(service.list_tables(rec.name)),
            "attached_at": _ts(rec.attached_at), "last_sync_at": _ts(rec.last_sync_at),
            "last_sync": rec.last_sync}


def _table_summary(rec: TableRecord) -> TableSummary:
    return TableSummary(name=rec.name, type=rec.table.table_type, location=rec.table.sd.location,
                        version=rec.version, partition_count=rec.partition_count,
                        bypass=rec.bypass)


def _error(status: int, type_name: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"error": {"type": type_name, "message": message, **extra}})


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _sync_answer(report: SyncReport) -> dict[str, Any] | JSONResponse:
    if report.errors:
        return _error(UdbError.http_status, UdbError.__name__,
                      f"sync of '{report.db}' could not read its under-database (last good "
                      f"state still served): {'; '.join(report.errors)}",
                      report=report.to_dict())
    return report.to_dict()


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
    def list_databases() -> list[dict[str, Any]]:
        """Every attached database with its under-database and last sync."""
        out = []
        for name in service.list_databases():
            try:
                out.append(_db_summary(service, service.database_record(name)))
            except CatalogError:  # detached meanwhile
                continue
        return out

    @app.get(f"{API_PREFIX}/databases/{{db}}", response_model=DatabaseDetail,
             tags=["databases"])
    def get_database(db: str) -> dict[str, Any]:
        rec = service.database_record(db)
        interval = (rec.sync_interval_s if rec.sync_interval_s is not None
                    else service.settings.sync_interval_s)
        return {**_db_summary(service, rec), "database": rec.info, "options": rec.options,
                "sync_interval_s": interval}

    @app.post(f"{API_PREFIX}/databases", response_model=SyncReportOut, status_code=201,
              tags=["databases"])
    def attach_database(body: AttachRequest) -> dict[str, Any]:
        """Attach a database; answers the report of its initial sync."""
        report = service.attach_database(body.udb_type, body.uri, body.source_db,
                                         name=body.name, options=body.options)
        return report.to_dict()

    @app.delete(f"{API_PREFIX}/databases/{{db}}", status_code=204, response_class=Response,
                tags=["databases"])
    def detach_database(db: str) -> Response:
        service.detach_database(db)
        return Response(status_code=204)

    @app.post(f"{API_PREFIX}/databases/{{db}}/sync", response_model=SyncReportOut,
              tags=["databases"])
    def sync_database(db: str) -> Any:
        """Sync now; 502 (with the report) if the under-database could not be read."""
        return _sync_answer(service.sync(db))

    # -- tables ----------------------------------------------------------------------------------

    @app.get(f"{API_PREFIX}/databases/{{db}}/tables", response_model=list[TableSummary],
             tags=["tables"])
    def list_tables(db: str) -> list[TableSummary]:
        return [_table_summary(r) for r in service.table_records(db)]

    @app.get(f"{API_PREFIX}/databases/{{db}}/tables/{{table}}", response_model=TableDetail,
             tags=["tables"])
    def get_table(db: str, table: str) -> TableDetail:
        rec = service.table_record(db, table)
        return TableDetail(**dict(rec.table), id=rec.id, version=rec.version,
                           partition_count=rec.partition_count, layout="source",
                           location=rec.table.sd.location, bypass=rec.bypass,
                           fingerprint=rec.fingerprint)

    @app.post(f"{API_PREFIX}/databases/{{db}}/tables/{{table}}/sync",
              response_model=SyncReportOut, tags=["tables"])
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
    ) -> PartitionPage:
        """Partitions in name order, paged, optionally filtered."""
        keys = service.table_record(db, table).table.partition_keys
        names = service.select_partition_names(db, table, filter_text=filter)
        parts = service.partitions_by_names(db, table, names[offset:offset + limit])
        return PartitionPage(
            total=len(names), offset=offset, limit=limit,
            partitions=[PartitionOut(**dict(p), name=partition_name(keys, p.values))
                        for p in parts])

    return app
