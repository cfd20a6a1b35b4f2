"""AWS Signature Version 4 for the S3 gateway: the ``Authorization`` header, presigned URLs
(query ``X-Amz-*``), and the chunk and trailer signatures of ``aws-chunked`` bodies.

The canonical request is built from the request as received: the path percent-decoded once and
re-encoded with AWS's rules (every byte but ``A-Za-z0-9-._~/``), the query parameters decoded
(``+`` is a space) and re-encoded sorted, the signed headers trimmed. Signatures are compared with
:func:`hmac.compare_digest`; secrets never appear in errors or logs. Requests must be dated within
:data:`MAX_SKEW_S` of the server's clock; presigned URLs live at most :data:`MAX_EXPIRES_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote_from_bytes, unquote_to_bytes

from api.s3.errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING = frozenset({STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER})
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW_S = 15 * 60
MAX_EXPIRES_S = 7 * 24 * 3600
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SPACES = re.compile(r"\s+")
#: Headers a client may send without signing them (proxies and SDKs add them).
_UNSIGNED_OK = frozenset({"x-amz-user-agent", "x-amzn-trace-id"})


@dataclass(frozen=True)
class Credentials:
    """The one key pair the gateway accepts, and the region it signs for."""

    access_key: str
    secret_key: str
    region: str


@dataclass(frozen=True)
class Auth:
    """What a verified (or anonymous) request carries on to its body."""

    anonymous: bool
    #: ``x-amz-content-sha256`` (a hex digest, ``UNSIGNED-PAYLOAD`` or a ``STREAMING-*`` mode).
    payload: str
    signing_key: bytes = b""
    signature: str = ""
    amz_date: str = ""
    scope: str = ""

    def chunks(self) -> ChunkSigner | None:
        """The verifier of chunk signatures (signed streaming modes of a signed request)."""
        if self.anonymous or self.payload not in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER):
            return None
        return ChunkSigner(self.signing_key, self.amz_date, self.scope, self.signature)


class ChunkSigner:
    """Checks the chain of ``chunk-signature`` values (each signs the previous one) and the
    final ``x-amz-trailer-signature``."""

    def __init__(self, key: bytes, amz_date: str, scope: str, seed: str) -> None:
        self.key, self.amz_date, self.scope, self.previous = key, amz_date, scope, seed

    def check_chunk(self, data_sha256: str, signature: str) -> None:
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", self.amz_date, self.scope,
                             self.previous, EMPTY_SHA256, data_sha256])
        expected = _hmac_hex(self.key, to_sign)
        if not hmac.compare_digest(expected, signature.lower().encode()):
            raise S3Error("SignatureDoesNotMatch", "a chunk signature does not match")
        self.previous = expected.decode()

    def check_trailer(self, canonical: bytes, signature: str) -> None:
        to_sign = "\n".join(["AWS4-HMAC-SHA256-TRAILER", self.amz_date, self.scope,
                             self.previous, hashlib.sha256(canonical).hexdigest()])
        if not hmac.compare_digest(_hmac_hex(self.key, to_sign), signature.lower().encode()):
            raise S3Error("SignatureDoesNotMatch", "the trailer signature does not match")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _hmac_hex(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).hexdigest().encode()


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    k = _hmac(("AWS4" + secret).encode("utf-8"), date)
    return _hmac(_hmac(_hmac(k, region), service), "aws4_request")


def _encode(raw: bytes, safe: str = "") -> str:
    return quote_from_bytes(raw, safe=safe)


def canonical_uri(raw_path: bytes) -> str:
    """The path decoded once and re-encoded with AWS's rules (``/`` kept)."""
    return _encode(unquote_to_bytes(raw_path), safe="/") or "/"


def query_pairs(raw_query: bytes) -> list[tuple[bytes, bytes]]:
    """The decoded (name, value) pairs of a query string, in order (``+`` is a space)."""
    out = []
    for part in raw_query.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        out.append((unquote_to_bytes(name.replace(b"+", b" ")),
                    unquote_to_bytes(value.replace(b"+", b" "))))
    return out


def canonical_query(pairs: Sequence[tuple[bytes, bytes]], skip: str | None = None) -> str:
    encoded = sorted((_encode(n), _encode(v)) for n, v in pairs
                     if skip is None or n != skip.encode())
    return "&".join(f"{n}={v}" for n, v in encoded)


def _raw_query(raw_query: bytes, skip: str | None) -> str:
    """The query's parameters as sent (not re-encoded), sorted, ``=`` added where missing."""
    parts = []
    for part in raw_query.decode("latin-1").split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if skip is None or name != skip:
            parts.append((name, value))
    return "&".join(f"{n}={v}" for n, v in sorted(parts))


def _canonical_headers(headers: Sequence[tuple[str, str]], signed: Sequence[str]) -> str:
    wanted = set(signed)
    values: dict[str, list[str]] = {}
    for name, value in headers:
        name = name.lower()
        if name in wanted:
            value = value.strip()
            if "  " in value or "\t" in value or "\n" in value or "\r" in value:
                value = _SPACES.sub(" ", value)
            values.setdefault(name, []).append(value)
    return "".join(f"{h}:{','.join(values.get(h, []))}\n" for h in signed)


def _parse_date(value: str) -> float:
    """Seconds since the epoch of an ``x-amz-date`` (``YYYYMMDDTHHMMSSZ``, UTC)."""
    if _AMZ_DATE.fullmatch(value):
        try:
            return datetime(int(value[0:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
                            int(value[11:13]), int(value[13:15]),
                            tzinfo=timezone.utc).timestamp()
        except ValueError:
            pass
    raise S3Error("AccessDenied", "AWS authentication requires a valid x-amz-date "
                  "(YYYYMMDDTHHMMSSZ)")


class Verifier:
    """Verifies requests against :class:`Credentials`; with none, every request is anonymous."""

    def __init__(self, credentials: Credentials | None) -> None:
        self.credentials = credentials
        self._keys: dict[str, bytes] = {}

    def _key(self, date: str) -> bytes:
        assert self.credentials is not None
        key = self._keys.get(date)
        if key is None:
            if len(self._keys) > 8:
                self._keys.clear()
            key = self._keys[date] = signing_key(self.credentials.secret_key, date,
                                                 self.credentials.region)
        return key

    def verify(self, method: str, raw_path: bytes, raw_query: bytes,
               headers: Sequence[tuple[str, str]], now: float | None = None) -> Auth:
        """The request's :class:`Auth`, or an ``S3Error`` (AccessDenied, SignatureDoesNotMatch,
        InvalidAccessKeyId, RequestTimeTooSkewed, AuthorizationHeaderMalformed, ...)."""
        now = time.time() if now is None else now
        lower = {k.lower(): v for k, v in headers}
        payload = lower.get("x-amz-content-sha256", "")
        pairs = query_pairs(raw_query)
        query = {n.decode("latin-1"): v.decode("latin-1") for n, v in pairs}
        authorization = lower.get("authorization")
        presigned = "X-Amz-Algorithm" in query or "X-Amz-Signature" in query
        if self.credentials is None:
            return Auth(anonymous=True, payload=payload or UNSIGNED)
        if authorization is None and "AWSAccessKeyId" in query and "Signature" in query:
            raise S3Error("InvalidRequest", "the authorization mechanism you have provided is "
                          "not supported (Signature Version 2); use AWS4-HMAC-SHA256 (boto3: "
                          "Config(signature_version='s3v4'))")
        if authorization is None and not presigned:
            raise S3Error("AccessDenied", "anonymous access is refused: sign requests with "
                                          "AWS Signature Version 4")
        if authorization is not None and presigned:
            raise S3Error("InvalidArgument", "only one auth mechanism allowed")
        if authorization is not None:
            credential, signed, signature = self._parse_header(authorization)
            amz_date = lower.get("x-amz-date", "")
            when = _parse_date(amz_date)
            if abs(now - when) > MAX_SKEW_S:
                raise S3Error("RequestTimeTooSkewed", "the difference between the request "
                              "time and the server's time is too large")
            if not payload:
                raise S3Error("InvalidRequest", "missing required header for this request: "
                                                "x-amz-content-sha256")
            if payload not in STREAMING and payload != UNSIGNED and not _HEX64.match(payload):
                raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                              "STREAMING-* or a SHA-256 hex digest")
            skip_query: str | None = None
            content_hash = payload
        else:
            if query.get("X-Amz-Algorithm") != ALGORITHM:
                raise S3Error("AuthorizationQueryParametersError",
                              "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
            try:
                credential = query["X-Amz-Credential"]
                signed = query["X-Amz-SignedHeaders"].split(";")
                signature = query["X-Amz-Signature"]
                amz_date = query["X-Amz-Date"]
                expires = int(query["X-Amz-Expires"])
            except (KeyError, ValueError) as e:
                raise S3Error("AuthorizationQueryParametersError",
                              "query-string authentication requires the X-Amz-Algorithm, "
                              "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, "
                              "X-Amz-SignedHeaders and X-Amz-Expires parameters") from e
            if not 0 < expires <= MAX_EXPIRES_S:
                raise S3Error("AuthorizationQueryParametersError",
                              f"X-Amz-Expires must be between 1 and {MAX_EXPIRES_S} seconds")
            when = _parse_date(amz_date)
            if when - now > MAX_SKEW_S:
                raise S3Error("AccessDenied", "request is not valid yet")
            if now > when + expires:
                raise S3Error("AccessDenied", "request has expired")
            skip_query = "X-Amz-Signature"
            content_hash = UNSIGNED
        date, region = self._check_scope(credential, amz_date)
        if "host" not in signed:
            raise S3Error("AuthorizationHeaderMalformed", "the host header must be signed")
        if authorization is not None:
            unsigned = [h for h in lower if h.startswith("x-amz-") and h not in signed
                        and h not in _UNSIGNED_OK]
            if unsigned:
                raise S3Error("AccessDenied", "there were headers present in the request "
                              f"which were not signed: {', '.join(sorted(unsigned))}")
        scope = f"{date}/{region}/s3/aws4_request"
        key = self._key(date)
        canonical_headers = _canonical_headers(headers, signed)
        signed_line = ";".join(signed)
        # AWS's encoding first; then the spelling as sent (clients that sign what they send).
        uris = list(dict.fromkeys([canonical_uri(raw_path), raw_path.decode("latin-1")]))
        queries = list(dict.fromkeys([canonical_query(pairs, skip_query),
                                      _raw_query(raw_query, skip_query)]))
        given = signature.lower().encode()
        for uri, query_line in ((u, q) for u in uris for q in queries):
            canonical = "\n".join([method, uri, query_line, canonical_headers, signed_line,
                                   content_hash])
            to_sign = "\n".join([ALGORITHM, amz_date, scope,
                                 hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
            expected = _hmac_hex(key, to_sign)
            if hmac.compare_digest(expected, given):
                return Auth(anonymous=False, payload=payload or UNSIGNED, signing_key=key,
                            signature=expected.decode(), amz_date=amz_date, scope=scope)
        raise S3Error("SignatureDoesNotMatch", "the request signature we calculated does not "
                      "match the signature you provided; check your key and signing method")

    @staticmethod
    def _parse_header(value: str) -> tuple[str, list[str], str]:
        algorithm, _, rest = value.strip().partition(" ")
        if algorithm != ALGORITHM:
            if algorithm == "AWS":
                raise S3Error("InvalidRequest", "the authorization mechanism you have provided "
                                                "is not supported; use AWS4-HMAC-SHA256")
            raise S3Error("AuthorizationHeaderMalformed",
                          f"unsupported authorization algorithm '{algorithm[:32]}'")
        fields: dict[str, str] = {}
        for part in rest.split(","):
            name, sep, val = part.strip().partition("=")
            if sep:
                fields[name.strip()] = val.strip()
        try:
            credential = fields["Credential"]
            signed = [h for h in fields["SignedHeaders"].lower().split(";") if h]
            signature = fields["Signature"]
        except KeyError as e:
            raise S3Error("AuthorizationHeaderMalformed",
                          f"the authorization header is malformed: {e.args[0]} is missing") from e
        if not _HEX64.match(signature.lower()):
            raise S3Error("AuthorizationHeaderMalformed", "the signature must be 64 hex digits")
        return credential, signed, signature

    def _check_scope(self, credential: str, amz_date: str) -> tuple[str, str]:
        assert self.credentials is not None
        parts = credential.split("/")
        if len(parts) != 5:
            raise S3Error("AuthorizationHeaderMalformed", "the credential is malformed: expected "
                          "<key>/<YYYYMMDD>/<region>/s3/aws4_request")
        key_id, date, region, service, terminator = parts
        if not hmac.compare_digest(key_id.encode(), self.credentials.access_key.encode()):
            raise S3Error("InvalidAccessKeyId", "the access key id you provided does not exist "
                                                "in our records")
        if date != amz_date[:8]:
            raise S3Error("AuthorizationHeaderMalformed", "the credential date does not match "
                                                          "x-amz-date")
        if region != self.credentials.region:
            raise S3Error("AuthorizationHeaderMalformed", f"the region '{region[:64]}' is "
                          f"wrong; expecting '{self.credentials.region}'")
        if service != "s3" or terminator != "aws4_request":
            raise S3Error("AuthorizationHeaderMalformed", "the credential scope must end with "
                                                          "/s3/aws4_request")
        return date, region
