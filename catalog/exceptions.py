"""The one error hierarchy of Strata.

Every error the catalog raises derives from :class:`CatalogError`. Vendor errors (Thrift, SQLite,
pyarrow, ...) are translated at the boundary where they occur (``raise NoSuchTableError(...) from e``)
and each protocol maps this tree once: HMS Thrift (``NoSuchObjectException`` / ``MetaException``),
REST (HTTP status + JSON body), the CLI (exit code + one line).

::

    CatalogError                      generic failure (Thrift MetaException, HTTP 500)
    ├── NotFoundError                 a named object does not exist (NoSuchObjectException, 404)
    │   ├── NoSuchDatabaseError
    │   ├── NoSuchTableError
    │   ├── NoSuchPartitionError
    │   └── NoSuchPathError           a namespace or storage path does not exist
    ├── AlreadyExistsError            name clash (AlreadyExistsException, 409)
    ├── InUseError                    refused: something still depends on it (409)
    ├── InvalidInputError             the caller's input is malformed (InvalidInputException, 422)
    │   ├── InvalidFilterError        a Hive partition filter that does not parse / type-check
    │   └── InvalidOptionError        an unknown or malformed attach/config option
    ├── ReadOnlyError                 a write on a read-only catalog or mount (MetaException, 405)
    ├── UdbError                      an under-database failed (502)
    │   └── UdbUnavailableError       the under-database cannot be reached (502)
    ├── UfsError                      an under storage failed (502)
    │   └── UfsUnavailableError       it cannot be listed or read: timeout, credentials, 5xx (502)
    ├── StateStoreError               the embedded state store failed (500)
    └── PermissionDeniedError         refused by the server's policy: allowed roots/metastores (403)
"""

from __future__ import annotations


class CatalogError(Exception):
    """Base of every error Strata raises; ``str(e)`` is a one-line reason for humans."""

    #: HTTP status used by the REST front end.
    http_status: int = 500


class NotFoundError(CatalogError):
    """A named object does not exist."""

    http_status = 404


class NoSuchDatabaseError(NotFoundError):
    def __init__(self, db: str) -> None:
        super().__init__(f"database '{db}' does not exist")
        self.db = db


class NoSuchTableError(NotFoundError):
    def __init__(self, db: str, table: str) -> None:
        super().__init__(f"table '{db}.{table}' does not exist")
        self.db = db
        self.table = table


class NoSuchPartitionError(NotFoundError):
    def __init__(self, db: str, table: str, partition: str) -> None:
        super().__init__(f"partition '{partition}' of table '{db}.{table}' does not exist")
        self.db = db
        self.table = table
        self.partition = partition


class AlreadyExistsError(CatalogError):
    """An object with that name exists already."""

    http_status = 409


class InvalidInputError(CatalogError):
    """The caller's input is malformed; the message names what is wrong."""

    http_status = 422


class InvalidFilterError(InvalidInputError):
    """A Hive partition filter expression does not parse or does not type-check."""


class InvalidOptionError(InvalidInputError):
    """An unknown or malformed option (attach options, configuration)."""


class ReadOnlyError(CatalogError):
    """A write was asked of a catalog that serves reads only."""

    http_status = 405


class UdbError(CatalogError):
    """An under-database answered with an error."""

    http_status = 502


class UdbUnavailableError(UdbError):
    """An under-database cannot be reached (connection refused, timeout)."""


class StateStoreError(CatalogError):
    """The embedded state store failed."""


class NoSuchPathError(NotFoundError):
    """A namespace path (or an under-storage file) does not exist."""


class InUseError(CatalogError):
    """Refused because something still depends on the object (a mount serving a table)."""

    http_status = 409


class UfsError(CatalogError):
    """An under storage answered with an error."""

    http_status = 502


class UfsUnavailableError(UfsError):
    """An under storage cannot be listed or read (timeout, credentials, 5xx): never "absent"."""


class PermissionDeniedError(CatalogError):
    """Refused by the server's policy (a path outside the allowed roots, a metastore not
    allowed); the message names the rule, not what lies behind it."""

    http_status = 403
