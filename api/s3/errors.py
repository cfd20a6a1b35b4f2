"""S3 errors: one exception type carrying the S3 code, its HTTP status and the error XML body,
and the one mapping of the catalog's error tree (:mod:`catalog.exceptions`) onto it."""

from __future__ import annotations

from xml.sax.saxutils import escape

from catalog.exceptions import (
    AlreadyExistsError,
    CatalogError,
    InUseError,
    InvalidInputError,
    NoSuchPathError,
    NotFoundError,
    PermissionDeniedError,
    ReadOnlyError,
    UfsError,
    UfsUnavailableError,
)

#: S3 error code -> HTTP status (the codes this gateway answers with).
STATUS: dict[str, int] = {
    "AccessDenied": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "BucketAlreadyOwnedByYou": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "KeyTooLongError": 400,
    "MalformedXML": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NotImplemented": 501,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "XAmzContentSHA256Mismatch": 400,
}


class S3Error(Exception):
    """An S3 error answer: ``code`` (e.g. ``NoSuchKey``), a one-line ``message`` and the
    status of :data:`STATUS`; ``headers`` are added to the response (e.g. ``Content-Range``)."""

    def __init__(self, code: str, message: str, *, headers: dict[str, str] | None = None,
                 resource: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = STATUS.get(code, 400)
        self.headers = headers or {}
        self.resource = resource

    def xml(self, resource: str, request_id: str) -> bytes:
        """The S3 error document."""
        return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>"
                f"<Code>{self.code}</Code><Message>{escape(self.message)}</Message>"
                f"<Resource>{escape(self.resource or resource)}</Resource>"
                f"<RequestId>{request_id}</RequestId></Error>").encode()


def from_catalog(e: CatalogError, *, missing: str = "NoSuchKey") -> S3Error:
    """The S3 error for a catalog error (``missing``: the code for a path that does not exist,
    ``NoSuchKey`` or ``NoSuchBucket``)."""
    message = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, NoSuchPathError | NotFoundError):
        return S3Error(missing, message)
    if isinstance(e, ReadOnlyError | PermissionDeniedError | InUseError):
        return S3Error("AccessDenied", message)
    if isinstance(e, UfsUnavailableError):
        return S3Error("ServiceUnavailable", message)
    if isinstance(e, UfsError):
        return S3Error("InternalError", message)
    if isinstance(e, InvalidInputError):
        return S3Error("InvalidArgument", message)
    if isinstance(e, AlreadyExistsError):
        return S3Error("PreconditionFailed", message)
    return S3Error("InternalError", "internal error")
