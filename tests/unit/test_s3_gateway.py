"""The S3 gateway as an ASGI app over a namespace of local mounts: every operation, every error
code, Signature V4 (botocore's signer for headers and presigned URLs), traversal keys and
``aws-chunked`` bodies built by hand (signed chunks, trailing checksums, bad ones)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pydantic import SecretStr
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from starlette.testclient import TestClient

import api.s3.auth as s3auth
from api.cli import build_parser
from api.s3 import create_s3_app
from api.s3.app import S3Gateway
from api.s3.auth import Credentials
from api.s3.checksums import ALGORITHMS
from api.s3.errors import S3Error
from api.s3.objects import STAGING_ROOT, TMP_MARK, identity_etag, multipart_etag
from catalog.config import Settings
from catalog.exceptions import InvalidOptionError, UfsUnavailableError
from catalog.fs.namespace import Namespace
from catalog.store import StateStore

ACCESS = "AKIDSTRATATEST"
SECRET = "strata-unit-test-secret"
REGION = "us-east-1"
HOST = "testserver"
MiB = 1024 * 1024
NS_XML = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class _Signer(S3SigV4Auth):
    """botocore's S3 signer with an explicit payload hash (``STREAMING-*`` modes)."""

    def __init__(self, creds: BotoCredentials, region: str, payload: str | None) -> None:
        super().__init__(creds, "s3", region)
        self._payload = payload

    def payload(self, request: Any) -> str:
        return self._payload or str(super().payload(request))


class S3:
    """Signed requests to the app through Starlette's TestClient."""

    def __init__(self, client: TestClient, access: str = ACCESS, secret: str = SECRET,
                 region: str = REGION) -> None:
        self.client, self.access, self.secret, self.region = client, access, secret, region

    def url(self, path: str, query: str = "", host: str = HOST) -> str:
        return f"http://{host}{quote(path, safe='/~')}" + (f"?{query}" if query else "")

    def signed_headers(self, method: str, url: str, body: bytes = b"",
                       headers: dict[str, str] | None = None, payload: str | None = None
                       ) -> dict[str, str]:
        req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
        _Signer(BotoCredentials(self.access, self.secret), self.region, payload).add_auth(req)
        return dict(req.headers.items())

    def request(self, method: str, path: str, *, query: str = "", body: Any = b"",
                headers: dict[str, str] | None = None, payload: str | None = None,
                sign: bool = True, host: str = HOST) -> httpx.Response:
        url = self.url(path, query, host)
        sent = dict(headers or {})
        if sign:
            sent = self.signed_headers(method, url, body if isinstance(body, bytes) else b"",
                                       sent, payload)
        return self.client.request(method, url, content=body, headers=sent)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def put(self, path: str, body: bytes = b"", **kw: Any) -> httpx.Response:
        return self.request("PUT", path, body=body, **kw)

    def head(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("HEAD", path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)

    def post(self, path: str, body: bytes = b"", **kw: Any) -> httpx.Response:
        return self.request("POST", path, body=body, **kw)

    def presign(self, method: str, path: str, expires: int = 300, query: str = "") -> str:
        req = AWSRequest(method=method, url=self.url(path, query))
        S3SigV4QueryAuth(BotoCredentials(self.access, self.secret), "s3", self.region,
                         expires=expires).add_auth(req)
        return str(req.url)


def error_code(resp: httpx.Response, status: int, code: str) -> str:
    """The message of an S3 error answer, after checking its status and code."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    import xml.etree.ElementTree as ET

    doc = ET.fromstring(resp.content)
    assert doc.tag == "Error", resp.text
    assert doc.findtext("Code") == code, resp.text
    assert doc.findtext("RequestId") and doc.findtext("Resource") is not None
    assert resp.headers["x-amz-request-id"] == doc.findtext("RequestId")
    return doc.findtext("Message") or ""


def xml_of(resp: httpx.Response) -> Any:
    import xml.etree.ElementTree as ET

    assert resp.status_code == 200, resp.text
    return ET.fromstring(resp.content)


def find_all(doc: Any, path: str) -> list[Any]:
    return doc.findall(path.replace("{ns}", NS_XML))


def find_text(doc: Any, path: str) -> str | None:
    found: str | None = doc.findtext(path.replace("{ns}", NS_XML))
    return found


def keys_of(doc: Any) -> list[str]:
    return [e.text for e in find_all(doc, "{ns}Contents/{ns}Key")]


def prefixes_of(doc: Any) -> list[str]:
    return [e.text for e in find_all(doc, "{ns}CommonPrefixes/{ns}Prefix")]


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    for rel, data in {"sales/a.csv": b"x,y\n1,2\n", "sales/b.csv": b"0123456789",
                      "sales/dt=1/p.csv": b"1\n", "top.txt": b"top"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (tmp_path / "ro" / "d").mkdir(parents=True)
    (tmp_path / "ro" / "d" / "f.txt").write_bytes(b"read only")
    return root


@pytest.fixture
def ns(tmp_path: Path, lake: Path) -> Iterator[Namespace]:
    namespace = Namespace(StateStore(tmp_path / "state"))
    namespace.mount("/lake", str(lake))
    namespace.mount("/ro", str(tmp_path / "ro"), {"readonly": "true"})
    yield namespace
    namespace.close()


@pytest.fixture
def gateway(ns: Namespace, tmp_path: Path) -> S3Gateway:
    return S3Gateway(ns, credentials=Credentials(ACCESS, SECRET, REGION), region=REGION,
                     max_object_bytes=64 * MiB, spool_dir=tmp_path / "spool")


@pytest.fixture
def s3(gateway: S3Gateway) -> Iterator[S3]:
    with TestClient(gateway, raise_server_exceptions=False) as client:
        yield S3(client)


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if TMP_MARK in p.name]


# -- buckets -------------------------------------------------------------------------------------


def test_list_buckets_are_the_top_level_mounts(s3: S3) -> None:
    doc = xml_of(s3.get("/"))
    names = [e.text for e in find_all(doc, "{ns}Buckets/{ns}Bucket/{ns}Name")]
    assert names == ["catalog", "lake", "ro"]
    assert all(e.text and e.text.endswith("Z") and not e.text.startswith("1970")
               for e in find_all(doc, "{ns}Buckets/{ns}Bucket/{ns}CreationDate"))


def test_head_bucket_and_location(s3: S3) -> None:
    assert s3.head("/lake").status_code == 200
    missing = s3.head("/nope")
    assert missing.status_code == 404 and missing.content == b""
    error_code(s3.get("/nope", query="list-type=2"), 404, "NoSuchBucket")
    doc = xml_of(s3.get("/lake", query="location"))
    assert doc.tag == f"{NS_XML}LocationConstraint" and (doc.text or "") == ""
    error_code(s3.put("/lake"), 409, "BucketAlreadyOwnedByYou")
    error_code(s3.put("/newbucket"), 403, "AccessDenied")
    error_code(s3.delete("/lake"), 403, "AccessDenied")
    error_code(s3.delete("/nope"), 404, "NoSuchBucket")


# -- reading -------------------------------------------------------------------------------------


def test_get_and_head_object(s3: S3, lake: Path) -> None:
    r = s3.get("/lake/sales/a.csv")
    assert r.status_code == 200 and r.content == b"x,y\n1,2\n"
    st = os.stat(lake / "sales/a.csv")
    etag = identity_etag((lake / "sales/a.csv").as_uri(), st.st_size, st.st_mtime_ns)
    assert r.headers["etag"] == etag and r.headers["accept-ranges"] == "bytes"
    h = s3.head("/lake/sales/a.csv")
    assert h.status_code == 200 and h.content == b""
    assert h.headers["content-length"] == "8" and h.headers["etag"] == etag
    assert h.headers["last-modified"].endswith("GMT")
    assert s3.head("/lake/sales/a.csv").headers["etag"] == etag  # stable
    os.utime(lake / "sales/a.csv", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert s3.head("/lake/sales/a.csv").headers["etag"] != etag  # a changed file
    error_code(s3.get("/lake/sales/none.csv"), 404, "NoSuchKey")
    assert s3.head("/lake/sales/none.csv").status_code == 404
    error_code(s3.get("/lake/sales"), 404, "NoSuchKey")  # a folder is no object
    r = s3.get("/lake/sales/a.csv", query="response-content-type=text%2Fcsv")
    assert r.headers["content-type"].startswith("text/csv")


def test_virtual_host_style(s3: S3) -> None:
    r = s3.get("/sales/b.csv", host="lake.localhost")
    assert r.status_code == 200 and r.content == b"0123456789"
    doc = xml_of(s3.get("/", query="list-type=2&prefix=sales%2F&delimiter=%2F",
                        host="lake.localhost"))
    assert find_text(doc, "{ns}Name") == "lake" and "sales/a.csv" in keys_of(doc)


@pytest.mark.parametrize(("header", "status", "body", "content_range"), [
    ("bytes=2-5", 206, b"2345", "bytes 2-5/10"),
    ("bytes=7-", 206, b"789", "bytes 7-9/10"),
    ("bytes=-3", 206, b"789", "bytes 7-9/10"),
    ("bytes=8-100", 206, b"89", "bytes 8-9/10"),
    ("bytes=-50", 206, b"0123456789", "bytes 0-9/10"),
    ("bytes=0-1,4-5", 200, b"0123456789", None),  # several ranges: the whole object
    ("bytes=5-2", 200, b"0123456789", None),      # bad syntax is ignored
    ("items=0-1", 200, b"0123456789", None),
])
def test_ranges(s3: S3, header: str, status: int, body: bytes, content_range: str | None
                ) -> None:
    r = s3.get("/lake/sales/b.csv", headers={"Range": header})
    assert (r.status_code, r.content) == (status, body)
    assert r.headers.get("content-range") == content_range
    assert r.headers["content-length"] == str(len(body))


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=20-30", "bytes=-0"])
def test_unsatisfiable_range(s3: S3, header: str) -> None:
    r = s3.get("/lake/sales/b.csv", headers={"Range": header})
    error_code(r, 416, "InvalidRange")
    assert r.headers["content-range"] == "bytes */10"


def test_large_read_streams_in_chunks(s3: S3, lake: Path) -> None:
    data = os.urandom(3 * MiB + 17)
    (lake / "big.bin").write_bytes(data)
    with s3.client.stream("GET", s3.url("/lake/big.bin"),
                          headers=s3.signed_headers("GET", s3.url("/lake/big.bin"))) as r:
        pieces = list(r.iter_raw())
    assert b"".join(pieces) == data
    r = s3.get("/lake/big.bin", headers={"Range": f"bytes={MiB}-{2 * MiB}"})
    assert r.content == data[MiB:2 * MiB + 1]


def test_conditional_get(s3: S3) -> None:
    h = s3.head("/lake/sales/a.csv")
    etag, modified = h.headers["etag"], h.headers["last-modified"]
    past, future = "Mon, 01 Jan 2001 00:00:00 GMT", "Fri, 01 Jan 2100 00:00:00 GMT"
    get = s3.get
    r = get("/lake/sales/a.csv", headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    assert get("/lake/sales/a.csv", headers={"If-None-Match": '"other"'}).status_code == 200
    error_code(get("/lake/sales/a.csv", headers={"If-Match": '"other"'}), 412,
               "PreconditionFailed")
    assert get("/lake/sales/a.csv", headers={"If-Match": etag}).status_code == 200
    assert get("/lake/sales/a.csv", headers={"If-Modified-Since": modified}).status_code == 304
    assert get("/lake/sales/a.csv", headers={"If-Modified-Since": past}).status_code == 200
    error_code(get("/lake/sales/a.csv", headers={"If-Unmodified-Since": past}), 412,
               "PreconditionFailed")
    assert get("/lake/sales/a.csv", headers={"If-Unmodified-Since": future}).status_code == 200
    # If-Match holding wins over If-Unmodified-Since; If-None-Match over If-Modified-Since
    assert get("/lake/sales/a.csv", headers={"If-Match": etag, "If-Unmodified-Since": past}
               ).status_code == 200
    assert get("/lake/sales/a.csv", headers={"If-None-Match": '"x"', "If-Modified-Since": future}
               ).status_code == 200
    assert s3.head("/lake/sales/a.csv", headers={"If-None-Match": etag}).status_code == 304
    assert s3.head("/lake/sales/a.csv", headers={"If-Match": '"x"'}).status_code == 412


# -- listing -------------------------------------------------------------------------------------


def test_list_v2_prefix_and_delimiter(s3: S3, lake: Path) -> None:
    (lake / "sales.txt").write_bytes(b"s")  # sorts before 'sales/' ('.' < '/')
    doc = xml_of(s3.get("/lake", query="list-type=2"))
    assert keys_of(doc) == ["sales.txt", "sales/a.csv", "sales/b.csv", "sales/dt=1/p.csv",
                            "top.txt"]
    assert find_text(doc, "{ns}KeyCount") == "5" and find_text(doc, "{ns}IsTruncated") == "false"
    doc = xml_of(s3.get("/lake", query="list-type=2&delimiter=/"))
    assert keys_of(doc) == ["sales.txt", "top.txt"] and prefixes_of(doc) == ["sales/"]
    assert find_text(doc, "{ns}KeyCount") == "3"
    doc = xml_of(s3.get("/lake", query="list-type=2&delimiter=/&prefix=sales/"))
    assert keys_of(doc) == ["sales/a.csv", "sales/b.csv"] and prefixes_of(doc) == ["sales/dt=1/"]
    doc = xml_of(s3.get("/lake", query="list-type=2&prefix=sales/d"))
    assert keys_of(doc) == ["sales/dt=1/p.csv"]
    doc = xml_of(s3.get("/lake", query="list-type=2&prefix=sal&delimiter=/"))
    assert keys_of(doc) == ["sales.txt"] and prefixes_of(doc) == ["sales/"]
    doc = xml_of(s3.get("/lake", query="list-type=2&delimiter=.csv"))  # any delimiter
    assert prefixes_of(doc) == ["sales/a.csv", "sales/b.csv", "sales/dt=1/p.csv"]
    assert keys_of(doc) == ["sales.txt", "top.txt"]
    doc = xml_of(s3.get("/lake", query="list-type=2&start-after=sales/b.csv"))
    assert keys_of(doc) == ["sales/dt=1/p.csv", "top.txt"]
    doc = xml_of(s3.get("/lake", query="list-type=2&prefix=zzz"))
    assert keys_of(doc) == [] and find_text(doc, "{ns}KeyCount") == "0"


def test_list_v2_pagination_visits_every_key_once(s3: S3, lake: Path) -> None:
    expected = []
    for i in range(23):
        folder = lake / "many" / f"d{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"k{i:03d}").write_bytes(b"x")
        expected.append(f"many/d{i % 4}/k{i:03d}")
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        query = "list-type=2&prefix=many/&max-keys=5" + (
            f"&continuation-token={quote(token, safe='')}" if token else "")
        doc = xml_of(s3.get("/lake", query=query))
        seen += keys_of(doc)
        pages += 1
        assert int(find_text(doc, "{ns}KeyCount") or 0) <= 5
        if find_text(doc, "{ns}IsTruncated") == "false":
            assert find_text(doc, "{ns}NextContinuationToken") is None
            break
        token = find_text(doc, "{ns}NextContinuationToken")
        assert token
    assert seen == sorted(expected) and pages == 5
    # with a delimiter, common prefixes are paged too and never repeated
    found: list[str] = []
    token = None
    while True:
        query = "list-type=2&prefix=many/&delimiter=/&max-keys=1" + (
            f"&continuation-token={quote(token, safe='')}" if token else "")
        doc = xml_of(s3.get("/lake", query=query))
        found += prefixes_of(doc)
        token = find_text(doc, "{ns}NextContinuationToken")
        if not token:
            break
    assert found == ["many/d0/", "many/d1/", "many/d2/", "many/d3/"]
    error_code(s3.get("/lake", query="list-type=2&continuation-token=%%%"), 400,
               "InvalidArgument")
    doc = xml_of(s3.get("/lake", query="list-type=2&max-keys=5000&prefix=many/"))
    assert find_text(doc, "{ns}MaxKeys") == "1000" and len(keys_of(doc)) == 23
    error_code(s3.get("/lake", query="list-type=2&max-keys=-1"), 400, "InvalidArgument")


def test_list_v1_marker(s3: S3) -> None:
    doc = xml_of(s3.get("/lake", query="max-keys=2"))
    assert keys_of(doc) == ["sales/a.csv", "sales/b.csv"]
    assert find_text(doc, "{ns}IsTruncated") == "true"
    assert find_text(doc, "{ns}NextMarker") == "sales/b.csv"
    doc = xml_of(s3.get("/lake", query="marker=sales/b.csv"))
    assert keys_of(doc) == ["sales/dt=1/p.csv", "top.txt"]
    assert find_text(doc, "{ns}Marker") == "sales/b.csv"
    doc = xml_of(s3.get("/lake", query="delimiter=/&max-keys=1"))
    assert prefixes_of(doc) == ["sales/"] and find_text(doc, "{ns}NextMarker") == "sales/"
    doc = xml_of(s3.get("/lake", query="delimiter=/&marker=sales/"))
    assert keys_of(doc) == ["top.txt"] and prefixes_of(doc) == []


def test_list_url_encoding_and_hidden_entries(s3: S3, lake: Path) -> None:
    (lake / "odd").mkdir()
    (lake / "odd" / "a b+c&d.txt").write_bytes(b"1")
    (lake / "odd" / f".x{TMP_MARK}0123").write_bytes(b"partial")  # a write in progress
    doc = xml_of(s3.get("/lake", query="list-type=2&prefix=odd/&encoding-type=url"))
    assert keys_of(doc) == ["odd/a%20b%2Bc%26d.txt"]
    assert find_text(doc, "{ns}EncodingType") == "url"
    doc = xml_of(s3.get("/lake", query="list-type=2&prefix=odd/"))
    assert keys_of(doc) == ["odd/a b+c&d.txt"]
    assert s3.get("/lake/odd/a b+c&d.txt").content == b"1"
    error_code(s3.get("/lake", query="list-type=2&encoding-type=base64"), 400, "InvalidArgument")
    doc = xml_of(s3.get("/catalog", query="list-type=2"))
    assert not any(k.startswith(".s3-uploads") for k in keys_of(doc))


def test_folders_markers_and_pruning(s3: S3, lake: Path) -> None:
    assert s3.put("/lake/newdir/").status_code == 200
    assert (lake / "newdir").is_dir()
    doc = xml_of(s3.get("/lake", query="list-type=2&prefix=newdir"))
    assert keys_of(doc) == ["newdir/"]
    h = s3.head("/lake/newdir/")
    assert h.status_code == 200 and h.headers["content-length"] == "0"
    error_code(s3.put("/lake/newdir2/", b"data"), 400, "InvalidArgument")
    assert s3.put("/lake/deep/er/x.txt", b"x").status_code == 200
    assert s3.delete("/lake/deep/er/x.txt").status_code == 204
    assert not (lake / "deep").exists()  # empty folders go with their last object
    assert s3.delete("/lake/newdir/").status_code == 204 and not (lake / "newdir").exists()
    assert s3.delete("/lake/sales/").status_code == 204  # not empty: stays
    assert (lake / "sales" / "a.csv").exists()
    error_code(s3.put("/lake/sales", b"x"), 400, "InvalidArgument")  # a folder there
    error_code(s3.put("/lake/top.txt/child", b"x"), 400, "InvalidArgument")  # a file there


# -- writing -------------------------------------------------------------------------------------


def test_put_get_roundtrip_true_md5_etag(s3: S3, lake: Path) -> None:
    data = os.urandom(3 * MiB)
    r = s3.put("/lake/new/obj.bin", data)
    assert r.status_code == 200 and r.headers["etag"] == md5_etag(data)
    assert (lake / "new" / "obj.bin").read_bytes() == data
    assert s3.head("/lake/new/obj.bin").headers["etag"] == md5_etag(data)  # kept (xattr)
    doc = xml_of(s3.get("/lake", query="list-type=2&prefix=new/"))
    assert find_text(doc, "{ns}Contents/{ns}ETag") == md5_etag(data)
    assert s3.get("/lake/new/obj.bin").content == data
    assert leftovers(lake) == []
    r = s3.put("/lake/new/obj.bin", b"v2")  # overwrite
    assert r.headers["etag"] == md5_etag(b"v2") and s3.get("/lake/new/obj.bin").content == b"v2"


def test_put_unsigned_payload(s3: S3) -> None:
    r = s3.put("/lake/u.txt", b"unsigned", payload="UNSIGNED-PAYLOAD")
    assert r.status_code == 200 and s3.get("/lake/u.txt").content == b"unsigned"


def test_put_if_none_match_star(s3: S3, lake: Path) -> None:
    r = s3.put("/lake/excl.txt", b"first", headers={"If-None-Match": "*"})
    assert r.status_code == 200
    error_code(s3.put("/lake/excl.txt", b"second", headers={"If-None-Match": "*"}), 412,
               "PreconditionFailed")
    assert (lake / "excl.txt").read_bytes() == b"first" and leftovers(lake) == []
    etag = md5_etag(b"first")
    error_code(s3.put("/lake/excl.txt", b"third", headers={"If-Match": '"nope"'}), 412,
               "PreconditionFailed")
    assert s3.put("/lake/excl.txt", b"fourth", headers={"If-Match": etag}).status_code == 200
    error_code(s3.put("/lake/absent.txt", b"x", headers={"If-Match": etag}), 404, "NoSuchKey")
    error_code(s3.put("/lake/excl.txt", b"x", headers={"If-None-Match": '"abc"'}), 501,
               "NotImplemented")


def test_exclusive_create_race_keeps_the_first(gateway: S3Gateway, lake: Path) -> None:
    """Two writers of one key with If-None-Match: * : the atomic link lets one win."""
    a = gateway.store.writer("lake", "race.txt")
    b = gateway.store.writer("lake", "race.txt")
    a.write(b"A")
    b.write(b"B")
    a.commit(md5_etag(b"A"), exclusive=True)
    with pytest.raises(S3Error, match="pre-conditions"):
        b.commit(md5_etag(b"B"), exclusive=True)
    assert (lake / "race.txt").read_bytes() == b"A" and leftovers(lake) == []


def test_body_digests(s3: S3, lake: Path) -> None:
    good = base64.b64encode(hashlib.md5(b"payload").digest()).decode()
    assert s3.put("/lake/d1.txt", b"payload", headers={"Content-MD5": good}).status_code == 200
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    error_code(s3.put("/lake/d2.txt", b"payload", headers={"Content-MD5": wrong}), 400,
               "BadDigest")
    error_code(s3.put("/lake/d2.txt", b"payload", headers={"Content-MD5": "nonsense"}), 400,
               "InvalidDigest")
    crc = base64.b64encode((zlib.crc32(b"payload") & 0xFFFFFFFF).to_bytes(4, "big")).decode()
    r = s3.put("/lake/d3.txt", b"payload", headers={"x-amz-checksum-crc32": crc})
    assert r.status_code == 200 and r.headers["x-amz-checksum-crc32"] == crc
    error_code(s3.put("/lake/d2.txt", b"payload", headers={"x-amz-checksum-crc32": "AAAAAA=="}),
               400, "BadDigest")
    error_code(s3.put("/lake/d2.txt", b"payload", payload=hashlib.sha256(b"x").hexdigest()),
               400, "XAmzContentSHA256Mismatch")
    assert not (lake / "d2.txt").exists() and leftovers(lake) == []


def test_size_limit(s3: S3, lake: Path, gateway: S3Gateway) -> None:
    gateway.max_object_bytes = 100
    error_code(s3.put("/lake/big.txt", b"x" * 101), 400, "EntityTooLarge")
    assert s3.put("/lake/ok.txt", b"x" * 100).status_code == 200
    assert not (lake / "big.txt").exists() and leftovers(lake) == []


def test_read_only_mount(s3: S3, tmp_path: Path) -> None:
    assert s3.get("/ro/d/f.txt").content == b"read only"
    error_code(s3.put("/ro/d/new.txt", b"x"), 403, "AccessDenied")
    error_code(s3.delete("/ro/d/f.txt"), 403, "AccessDenied")
    error_code(s3.post("/ro/d/up.bin", query="uploads"), 403, "AccessDenied")
    assert (tmp_path / "ro" / "d" / "f.txt").exists() and not (tmp_path / "ro/d/new.txt").exists()


def test_delete_object(s3: S3, lake: Path) -> None:
    assert s3.delete("/lake/top.txt").status_code == 204 and not (lake / "top.txt").exists()
    assert s3.delete("/lake/top.txt").status_code == 204  # absent: still 204
    assert s3.delete("/lake/sales").status_code == 204 and (lake / "sales" / "a.csv").exists()
    error_code(s3.delete("/nobucket/x"), 404, "NoSuchBucket")


def delete_xml(keys: list[str], quiet: bool = False) -> bytes:
    from xml.sax.saxutils import escape

    objs = "".join(f"<Object><Key>{escape(k)}</Key></Object>" for k in keys)
    return (f'<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="{NS_XML[1:-1]}">'
            f"<Quiet>{'true' if quiet else 'false'}</Quiet>{objs}</Delete>").encode()


def test_delete_objects(s3: S3, lake: Path) -> None:
    for i in range(5):
        (lake / "batch" / f"f{i}").parent.mkdir(exist_ok=True)
        (lake / "batch" / f"f{i}").write_bytes(b"x")
    body = delete_xml(["batch/f0", "batch/f1", "batch/missing", "a/../b"])
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    doc = xml_of(s3.post("/lake", body, query="delete", headers={"Content-MD5": md5}))
    assert [e.text for e in find_all(doc, "{ns}Deleted/{ns}Key")] == [
        "batch/f0", "batch/f1", "batch/missing"]
    errors = find_all(doc, "{ns}Error")
    assert [(find_text(e, "{ns}Key"), find_text(e, "{ns}Code")) for e in errors] == [
        ("a/../b", "InvalidArgument")]
    assert sorted(p.name for p in (lake / "batch").iterdir()) == ["f2", "f3", "f4"]
    doc = xml_of(s3.post("/lake", delete_xml(["batch/f2", "batch/f3", "batch/f4"], quiet=True),
                         query="delete"))
    assert find_all(doc, "{ns}Deleted") == [] and not (lake / "batch").exists()
    error_code(s3.post("/lake", b"<Delete><Object>", query="delete"), 400, "MalformedXML")
    error_code(s3.post("/lake", delete_xml([f"k{i}" for i in range(1001)]), query="delete"),
               400, "MalformedXML")
    bomb = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]>'
            b"<Delete><Object><Key>&a;</Key></Object></Delete>")
    error_code(s3.post("/lake", bomb, query="delete"), 400, "MalformedXML")
    doc = xml_of(s3.post("/ro", delete_xml(["d/f.txt"]), query="delete"))
    assert find_text(doc, "{ns}Error/{ns}Code") == "AccessDenied"


def test_copy_object(s3: S3, lake: Path) -> None:
    r = s3.put("/lake/copy/dst.csv", headers={"x-amz-copy-source": "/lake/sales/a.csv"})
    doc = xml_of(r)
    assert find_text(doc, "{ns}ETag") == md5_etag(b"x,y\n1,2\n")
    assert (lake / "copy" / "dst.csv").read_bytes() == b"x,y\n1,2\n"
    r = s3.put("/lake/copy/dst2.csv", headers={"x-amz-copy-source": "lake/sales/b.csv"})
    assert r.status_code == 200 and (lake / "copy/dst2.csv").read_bytes() == b"0123456789"
    error_code(s3.put("/lake/sales/a.csv", headers={"x-amz-copy-source": "/lake/sales/a.csv"}),
               400, "InvalidRequest")
    assert s3.put("/lake/sales/a.csv", headers={"x-amz-copy-source": "/lake/sales/a.csv",
                                                 "x-amz-metadata-directive": "REPLACE"}
                  ).status_code == 200
    error_code(s3.put("/lake/c.csv", headers={"x-amz-copy-source": "/lake/none"}), 404,
               "NoSuchKey")
    error_code(s3.put("/lake/c.csv", headers={"x-amz-copy-source": "/lake/sales/a.csv",
                                               "x-amz-copy-source-if-match": '"zz"'}),
               412, "PreconditionFailed")
    error_code(s3.put("/lake/c.csv", headers={"x-amz-copy-source": "/lake/a/%2e%2e/x"}), 400,
               "InvalidArgument")
    error_code(s3.put("/ro/d/c.csv", headers={"x-amz-copy-source": "/lake/sales/a.csv"}), 403,
               "AccessDenied")


# -- multipart -----------------------------------------------------------------------------------


def _create(s3: S3, path: str) -> str:
    doc = xml_of(s3.post(path, query="uploads"))
    upload_id = find_text(doc, "{ns}UploadId")
    assert upload_id
    return upload_id


def _complete_xml(parts: list[tuple[int, str]]) -> bytes:
    inner = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
                    for n, e in parts)
    return f"<CompleteMultipartUpload>{inner}</CompleteMultipartUpload>".encode()


def test_multipart_upload(s3: S3, lake: Path, tmp_path: Path) -> None:
    uid = _create(s3, "/lake/mp/obj.bin")
    part1, part2 = os.urandom(5 * MiB), os.urandom(1234)
    e1 = s3.put("/lake/mp/obj.bin", part1, query=f"partNumber=1&uploadId={uid}").headers["etag"]
    s3.put("/lake/mp/obj.bin", b"replaced below", query=f"partNumber=2&uploadId={uid}")
    e2 = s3.put("/lake/mp/obj.bin", part2, query=f"partNumber=2&uploadId={uid}").headers["etag"]
    assert (e1, e2) == (md5_etag(part1), md5_etag(part2))
    assert not (lake / "mp" / "obj.bin").exists()  # nothing visible before completion
    assert keys_of(xml_of(s3.get("/lake", query="list-type=2&prefix=mp"))) == []
    doc = xml_of(s3.get("/lake/mp/obj.bin", query=f"uploadId={uid}"))
    assert [(find_text(p, "{ns}PartNumber"), find_text(p, "{ns}Size"))
            for p in find_all(doc, "{ns}Part")] == [("1", str(5 * MiB)), ("2", "1234")]
    doc = xml_of(s3.get("/lake", query="uploads"))
    assert [find_text(u, "{ns}UploadId") for u in find_all(doc, "{ns}Upload")] == [uid]
    error_code(s3.post("/lake/mp/obj.bin", _complete_xml([(2, e2), (1, e1)]),
                       query=f"uploadId={uid}"), 400, "InvalidPartOrder")
    error_code(s3.post("/lake/mp/obj.bin", _complete_xml([(1, e1), (2, '"0000"')]),
                       query=f"uploadId={uid}"), 400, "InvalidPart")
    error_code(s3.post("/lake/mp/obj.bin", _complete_xml([(1, e1), (3, e2)]),
                       query=f"uploadId={uid}"), 400, "InvalidPart")
    error_code(s3.post("/lake/mp/obj.bin", b"<Nope/>", query=f"uploadId={uid}"), 400,
               "MalformedXML")
    doc = xml_of(s3.post("/lake/mp/obj.bin", _complete_xml([(1, e1), (2, e2)]),
                         query=f"uploadId={uid}"))
    expected = multipart_etag([hashlib.md5(part1).digest(), hashlib.md5(part2).digest()])
    assert find_text(doc, "{ns}ETag") == expected and expected.endswith('-2"')
    assert (lake / "mp" / "obj.bin").read_bytes() == part1 + part2
    assert s3.head("/lake/mp/obj.bin").headers["etag"] == expected
    assert not (tmp_path / "state" / "catalog" / ".s3-uploads" / uid).exists()
    error_code(s3.post("/lake/mp/obj.bin", _complete_xml([(1, e1), (2, e2)]),
                       query=f"uploadId={uid}"), 404, "NoSuchUpload")
    assert leftovers(lake) == []


def test_multipart_small_part_abort_and_bad_ids(s3: S3, tmp_path: Path) -> None:
    uid = _create(s3, "/lake/mp/small.bin")
    e1 = s3.put("/lake/mp/small.bin", b"a" * 100, query=f"partNumber=1&uploadId={uid}"
                ).headers["etag"]
    e2 = s3.put("/lake/mp/small.bin", b"b", query=f"partNumber=2&uploadId={uid}").headers["etag"]
    error_code(s3.post("/lake/mp/small.bin", _complete_xml([(1, e1), (2, e2)]),
                       query=f"uploadId={uid}"), 400, "EntityTooSmall")
    error_code(s3.put("/lake/mp/small.bin", b"x", query=f"partNumber=0&uploadId={uid}"), 400,
               "InvalidArgument")
    error_code(s3.put("/lake/mp/small.bin", b"x", query=f"partNumber=10001&uploadId={uid}"),
               400, "InvalidArgument")
    error_code(s3.put("/lake/mp/other.bin", b"x", query=f"partNumber=1&uploadId={uid}"), 404,
               "NoSuchUpload")  # another key's upload
    error_code(s3.put("/lake/mp/small.bin", b"x", query="partNumber=1&uploadId=../../etc"), 404,
               "NoSuchUpload")
    assert s3.delete("/lake/mp/small.bin", query=f"uploadId={uid}").status_code == 204
    assert not (tmp_path / "state" / "catalog" / ".s3-uploads" / uid).exists()
    error_code(s3.delete("/lake/mp/small.bin", query=f"uploadId={uid}"), 404, "NoSuchUpload")
    error_code(s3.get("/lake/mp/small.bin", query=f"uploadId={uid}"), 404, "NoSuchUpload")
    # a single small part is fine (the last part may be small)
    uid = _create(s3, "/lake/mp/one.bin")
    e1 = s3.put("/lake/mp/one.bin", b"only", query=f"partNumber=1&uploadId={uid}").headers["etag"]
    doc = xml_of(s3.post("/lake/mp/one.bin", _complete_xml([(1, e1)]), query=f"uploadId={uid}"))
    assert find_text(doc, "{ns}ETag") == multipart_etag([hashlib.md5(b"only").digest()])


def test_staging_area_is_not_addressable(s3: S3, tmp_path: Path) -> None:
    uid = _create(s3, "/lake/mp/hidden.bin")
    error_code(s3.get(f"/catalog/.s3-uploads/{uid}/upload.json"), 403, "AccessDenied")
    error_code(s3.put(f"/catalog/.s3-uploads/{uid}/upload.json", b"{}"), 403, "AccessDenied")
    error_code(s3.delete(f"/catalog/.s3-uploads/{uid}"), 403, "AccessDenied")
    assert (tmp_path / "state" / "catalog" / ".s3-uploads" / uid / "upload.json").exists()
    assert STAGING_ROOT == "/catalog/.s3-uploads"


# -- aws-chunked bodies --------------------------------------------------------------------------


def _key(date: str) -> bytes:
    k = hmac.new(b"AWS4" + SECRET.encode(), date.encode(), hashlib.sha256).digest()
    for part in (REGION, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def chunked_put(s3: S3, path: str, payload: bytes, mode: str, *, trailer: str | None = None,
                bad: str | None = None, chunk: int = 64 * 1024, stream: bool = False,
                query: str = "") -> httpx.Response:
    """PUT ``payload`` as aws-chunked in ``mode``, with a ``trailer`` checksum algorithm; ``bad``
    corrupts one thing: 'chunk-signature', 'checksum', 'trailer-signature', 'truncated',
    'length'."""
    headers = {"Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(len(payload) + (1 if bad == "length" else 0))}
    if trailer:
        headers["x-amz-trailer"] = f"x-amz-checksum-{trailer}"
    url = s3.url(path, query)
    signed = s3.signed_headers("PUT", url, b"", headers, payload=mode)
    seed = signed["Authorization"].rsplit("Signature=", 1)[1]
    amz_date = signed["X-Amz-Date"]
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    key = _key(amz_date[:8])
    signing = mode.startswith("STREAMING-AWS4-HMAC-SHA256")
    empty = hashlib.sha256(b"").hexdigest()
    wire = bytearray()
    previous = seed
    pieces = [payload[i:i + chunk] for i in range(0, len(payload), chunk)] + [b""]
    for n, piece in enumerate(pieces):
        if signing:
            sig = _sign(key, "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous,
                                        empty, hashlib.sha256(piece).hexdigest()]))
            previous = sig
            if bad == "chunk-signature" and n == 1:
                sig = "0" * 64
            wire += f"{len(piece):x};chunk-signature={sig}\r\n".encode()
        else:
            wire += f"{len(piece):x}\r\n".encode()
        if piece:
            wire += piece + b"\r\n"
    if trailer:
        c = ALGORITHMS[trailer]()
        c.update(payload if bad != "checksum" else payload + b"!")
        value = base64.b64encode(c.digest()).decode()
        line = f"x-amz-checksum-{trailer}:{value}"
        wire += (line + "\r\n").encode()
        if signing:
            tsig = _sign(key, "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous,
                                         hashlib.sha256((line + "\n").encode()).hexdigest()]))
            if bad == "trailer-signature":
                tsig = "f" * 64
            wire += f"x-amz-trailer-signature:{tsig}\r\n".encode()
    wire += b"\r\n"
    if bad == "truncated":
        wire = wire[:len(wire) // 2]
    body = bytes(wire)
    if stream:
        signed.pop("Content-Length", None)
        return s3.client.request("PUT", url, content=iter([body[:1000], body[1000:]]),
                                 headers=signed)
    return s3.client.request("PUT", url, content=body, headers=signed)


SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


@pytest.mark.parametrize(("mode", "trailer"), [
    (SIGNED, None), (UNSIGNED_TRAILER, "crc32"), (UNSIGNED_TRAILER, "crc32c"),
    (UNSIGNED_TRAILER, "sha256"), (UNSIGNED_TRAILER, "sha1"), (UNSIGNED_TRAILER, "crc64nvme"),
    (SIGNED_TRAILER, "crc32"),
])
def test_aws_chunked_bodies(s3: S3, lake: Path, mode: str, trailer: str | None) -> None:
    payload = os.urandom(150_000 if trailer not in ("crc32c", "crc64nvme") else 20_000)
    r = chunked_put(s3, "/lake/chunked.bin", payload, mode, trailer=trailer)
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == md5_etag(payload)
    assert (lake / "chunked.bin").read_bytes() == payload


def test_aws_chunked_transfer_encoding_chunked(s3: S3, lake: Path) -> None:
    payload = os.urandom(70_000)
    r = chunked_put(s3, "/lake/te.bin", payload, UNSIGNED_TRAILER, trailer="crc32", stream=True)
    assert r.status_code == 200, r.text
    assert (lake / "te.bin").read_bytes() == payload


@pytest.mark.parametrize(("mode", "trailer", "bad", "status", "code"), [
    (SIGNED, None, "chunk-signature", 403, "SignatureDoesNotMatch"),
    (SIGNED_TRAILER, "crc32", "chunk-signature", 403, "SignatureDoesNotMatch"),
    (SIGNED_TRAILER, "crc32", "trailer-signature", 403, "SignatureDoesNotMatch"),
    (SIGNED_TRAILER, "crc32", "checksum", 400, "BadDigest"),
    (UNSIGNED_TRAILER, "crc32", "checksum", 400, "BadDigest"),
    (UNSIGNED_TRAILER, "sha256", "checksum", 400, "BadDigest"),
    (UNSIGNED_TRAILER, "crc32", "truncated", 400, "IncompleteBody"),
    (SIGNED, None, "length", 400, "IncompleteBody"),
])
def test_aws_chunked_refusals(s3: S3, lake: Path, mode: str, trailer: str | None, bad: str,
                              status: int, code: str) -> None:
    (lake / "keep.bin").write_bytes(b"old")
    r = chunked_put(s3, "/lake/keep.bin", os.urandom(150_000), mode, trailer=trailer, bad=bad)
    error_code(r, status, code)
    assert (lake / "keep.bin").read_bytes() == b"old" and leftovers(lake) == []


def test_multipart_part_as_aws_chunked(s3: S3, lake: Path) -> None:
    uid = _create(s3, "/lake/mp/chunked.bin")
    payload = os.urandom(100_000)
    r = chunked_put(s3, "/lake/mp/chunked.bin", payload, SIGNED_TRAILER, trailer="crc32",
                    query=f"partNumber=1&uploadId={uid}")
    assert r.status_code == 200 and r.headers["etag"] == md5_etag(payload)
    r = chunked_put(s3, "/lake/mp/chunked.bin", payload, SIGNED_TRAILER, trailer="crc32",
                    query=f"partNumber=2&uploadId={uid}", bad="checksum")
    error_code(r, 400, "BadDigest")
    doc = xml_of(s3.get("/lake/mp/chunked.bin", query=f"uploadId={uid}"))
    assert [find_text(p, "{ns}PartNumber") for p in find_all(doc, "{ns}Part")] == ["1"]
    doc = xml_of(s3.post("/lake/mp/chunked.bin", _complete_xml([(1, md5_etag(payload))]),
                         query=f"uploadId={uid}"))
    assert (lake / "mp" / "chunked.bin").read_bytes() == payload


# -- authentication ------------------------------------------------------------------------------


def test_unsigned_and_badly_signed_requests(s3: S3, lake: Path) -> None:
    error_code(s3.get("/lake/sales/a.csv", sign=False), 403, "AccessDenied")
    error_code(s3.put("/lake/x.txt", b"x", sign=False), 403, "AccessDenied")
    assert not (lake / "x.txt").exists()
    wrong = S3(s3.client, secret="not-the-secret")
    error_code(wrong.get("/lake/sales/a.csv"), 403, "SignatureDoesNotMatch")
    error_code(wrong.put("/lake/x.txt", b"x"), 403, "SignatureDoesNotMatch")
    error_code(S3(s3.client, access="AKIDOTHER").get("/lake/sales/a.csv"), 403,
               "InvalidAccessKeyId")
    error_code(S3(s3.client, region="eu-west-1").get("/lake/sales/a.csv"), 400,
               "AuthorizationHeaderMalformed")
    headers = s3.signed_headers("GET", s3.url("/lake/sales/a.csv"))
    tampered = s3.client.get(s3.url("/lake/sales/b.csv"), headers=headers)  # other path
    error_code(tampered, 403, "SignatureDoesNotMatch")
    extra = dict(headers, **{"x-amz-copy-source": "/lake/top.txt"})
    error_code(s3.client.get(s3.url("/lake/sales/a.csv"), headers=extra), 403, "AccessDenied")
    old = dict(headers, **{"X-Amz-Date": "20200101T000000Z"})
    error_code(s3.client.get(s3.url("/lake/sales/a.csv"), headers=old), 403,
               "RequestTimeTooSkewed")
    for bad in ("AWS4-HMAC-SHA256 Credential=x", "AWS4-HMAC-SHA256 Credential=a/b/c, "
                "SignedHeaders=host, Signature=" + "0" * 64, "Foo bar"):
        r = s3.client.get(s3.url("/lake/sales/a.csv"), headers=dict(headers, Authorization=bad))
        error_code(r, 400, "AuthorizationHeaderMalformed")
    v2 = s3.client.get(s3.url("/lake/sales/a.csv"), headers=dict(headers,
                                                                Authorization="AWS k:sig"))
    error_code(v2, 400, "InvalidRequest")
    no_sha = {k: v for k, v in headers.items() if k.lower() != "x-amz-content-sha256"}
    error_code(s3.client.get(s3.url("/lake/sales/a.csv"), headers=no_sha), 400, "InvalidRequest")


def test_presigned_urls(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    url = s3.presign("GET", "/lake/sales/a.csv", expires=60)
    assert "X-Amz-Signature=" in url
    r = s3.client.get(url)
    assert r.status_code == 200 and r.content == b"x,y\n1,2\n"
    error_code(s3.client.get(url.replace("a.csv", "b.csv")), 403, "SignatureDoesNotMatch")
    error_code(s3.client.get(url.replace("X-Amz-Expires=60", "X-Amz-Expires=61")), 403,
               "SignatureDoesNotMatch")
    put_url = s3.presign("PUT", "/lake/presigned.txt")
    assert s3.client.put(put_url, content=b"via url").status_code == 200
    assert s3.get("/lake/presigned.txt").content == b"via url"
    too_long = s3.presign("GET", "/lake/sales/a.csv", expires=7 * 24 * 3600 + 1)
    error_code(s3.client.get(too_long), 400, "AuthorizationQueryParametersError")
    real = time.time
    monkeypatch.setattr(s3auth.time, "time", lambda: real() + 120)  # past its 60 s
    error_code(s3.client.get(url), 403, "AccessDenied")


def test_anonymous_gateway_and_startup_rule(ns: Namespace, tmp_path: Path) -> None:
    gw = S3Gateway(ns, credentials=None, region=REGION, max_object_bytes=MiB)
    with TestClient(gw) as client:
        assert client.get("/lake/sales/a.csv").content == b"x,y\n1,2\n"
        assert client.put("/lake/anon.txt", content=b"a").status_code == 200
    with pytest.raises(InvalidOptionError, match="CATALOG_S3_ACCESS_KEY"):
        create_s3_app(ns, Settings(data_dir=tmp_path / "x", host="0.0.0.0"))
    keyed = create_s3_app(ns, Settings(data_dir=tmp_path / "x", host="0.0.0.0",
                                       s3_access_key="k", s3_secret_key=SecretStr("s")))
    assert keyed.verifier.credentials is not None
    assert create_s3_app(ns, Settings(data_dir=tmp_path / "x", host="127.0.0.1")
                         ).verifier.credentials is None
    with pytest.raises(InvalidOptionError, match="go together"):
        create_s3_app(ns, Settings(data_dir=tmp_path / "x", s3_access_key="k"))


def test_serve_flag() -> None:
    args = build_parser().parse_args(["serve", "--s3-port", "9000"])
    assert args.s3_port == 9000
    assert build_parser().parse_args(["serve"]).s3_port is None


# -- keys and hostile paths ----------------------------------------------------------------------


def asgi(app: S3Gateway, method: str, raw_path: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One request straight into the app with an exact raw path (no client normalizes it)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": raw_path.decode("latin-1"),
             "raw_path": raw_path, "query_string": b"", "root_path": "", "scheme": "http",
             "headers": [(b"host", b"testserver"), (b"content-length", str(len(body)).encode())],
             "server": ("testserver", 80), "client": ("127.0.0.1", 1), "http_version": "1.1"}
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.parametrize("raw", [
    b"/lake/a/../../etc/passwd", b"/lake/%2e%2e/%2e%2e/etc/passwd", b"/lake/sales/%2E%2E/x",
    b"/lake/a//b", b"/lake//x", b"/lake/x%00y", b"/lake/x%01", b"/lake/%ff%fe", b"/lake/./x",
    b"/lake/x%0a",
])
def test_hostile_keys_are_refused(ns: Namespace, tmp_path: Path, raw: bytes) -> None:
    gw = S3Gateway(ns, credentials=None, region=REGION, max_object_bytes=MiB)
    for method in ("GET", "PUT", "DELETE"):
        status, body = asgi(gw, method, raw, b"evil" if method == "PUT" else b"")
        assert status == 400, (method, raw, body)
        assert b"<Code>InvalidArgument</Code>" in body
    assert not any(p.read_bytes() == b"evil" for p in tmp_path.rglob("*") if p.is_file())


def test_percent_decoding_happens_once(s3: S3, lake: Path) -> None:
    r = s3.put("/lake/lit%2e%2e", b"literal")  # the key is 'lit%2e%2e', not 'lit..'
    assert r.status_code == 200 and (lake / "lit%2e%2e").read_bytes() == b"literal"
    error_code(s3.get("/lake/" + "k" * 1025), 400, "KeyTooLongError")
    error_code(s3.put(f"/lake/x{TMP_MARK}1", b"x"), 400, "InvalidArgument")


# -- other errors --------------------------------------------------------------------------------


def test_not_implemented_and_method_not_allowed(s3: S3) -> None:
    error_code(s3.get("/lake/sales/a.csv", query="acl"), 501, "NotImplemented")
    error_code(s3.get("/lake", query="policy"), 501, "NotImplemented")
    error_code(s3.put("/lake/sales/a.csv", b"", query="tagging"), 501, "NotImplemented")
    error_code(s3.request("PATCH", "/lake/sales/a.csv"), 405, "MethodNotAllowed")
    error_code(s3.request("POST", "/"), 405, "MethodNotAllowed")
    error_code(s3.post("/lake/sales/a.csv"), 501, "NotImplemented")
    error_code(s3.get("/lake", query="list-type=3"), 400, "InvalidArgument")
    assert xml_of(s3.get("/lake", query="versioning")).tag == f"{NS_XML}VersioningConfiguration"


def test_storage_errors_map_to_s3_codes(s3: S3, ns: Namespace,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(path: str) -> Any:
        raise UfsUnavailableError("cannot stat s3://x: timeout")

    # A GET looks the object up by its identity (files), a stat (folders): both fail here.
    monkeypatch.setattr(ns, "stat", unavailable)
    monkeypatch.setattr(ns, "identity", unavailable)
    error_code(s3.get("/lake/sales/a.csv"), 503, "ServiceUnavailable")

    def broken(path: str) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(ns, "stat", broken)
    monkeypatch.setattr(ns, "identity", broken)
    r = s3.get("/lake/sales/a.csv")
    error_code(r, 500, "InternalError")
    assert b"secret internal detail" not in r.content and b"Traceback" not in r.content


def test_missing_content_length(ns: Namespace) -> None:
    gw = S3Gateway(ns, credentials=None, region=REGION, max_object_bytes=MiB)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "PUT", "path": "/lake/n.txt", "raw_path": b"/lake/n.txt",
             "query_string": b"", "headers": [(b"host", b"testserver")], "root_path": ""}
    asyncio.run(gw(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 411


# -- UploadPartCopy ------------------------------------------------------------------------------


def _copy_part(s3: S3, path: str, uid: str, number: int, source: str,
               headers: dict[str, str] | None = None) -> httpx.Response:
    """A PUT shaped as boto3's ``upload_part_copy`` sends it (``bucket/key``, URL-quoted)."""
    return s3.put(path, query=f"partNumber={number}&uploadId={uid}",
                  headers={"x-amz-copy-source": quote(source, safe="/~"), **(headers or {})})


def _copy_result(resp: httpx.Response) -> tuple[str, str]:
    doc = xml_of(resp)
    assert doc.tag == f"{NS_XML}CopyPartResult", resp.text
    etag, modified = find_text(doc, "{ns}ETag"), find_text(doc, "{ns}LastModified")
    assert etag and modified and modified.endswith("Z")
    return etag, modified


def test_upload_part_copy_ranges_from_two_sources(s3: S3, lake: Path) -> None:
    big, small = os.urandom(5 * MiB + 300), b"the small source, copied whole"
    (lake / "upc").mkdir()
    (lake / "upc" / "big.bin").write_bytes(big)
    (lake / "upc" / "small one.txt").write_bytes(small)
    uid = _create(s3, "/lake/upc/dst.bin")
    # the whole source
    etag, modified = _copy_result(_copy_part(s3, "/lake/upc/dst.bin", uid, 3,
                                             "lake/upc/small one.txt"))
    assert etag == md5_etag(small)
    # a range (inclusive offsets), from each source
    e1, _ = _copy_result(_copy_part(s3, "/lake/upc/dst.bin", uid, 1, "/lake/upc/big.bin",
                                    {"x-amz-copy-source-range": f"bytes=100-{5 * MiB + 99}"}))
    e2, _ = _copy_result(_copy_part(s3, "/lake/upc/dst.bin", uid, 2, "lake/upc/small one.txt",
                                    {"x-amz-copy-source-range": "bytes=4-8"}))
    assert (e1, e2) == (md5_etag(big[100:5 * MiB + 100]), md5_etag(small[4:9]))
    doc = xml_of(s3.get("/lake/upc/dst.bin", query=f"uploadId={uid}"))
    assert [(find_text(p, "{ns}PartNumber"), find_text(p, "{ns}Size"), find_text(p, "{ns}ETag"))
            for p in find_all(doc, "{ns}Part")] == [("1", str(5 * MiB), e1), ("2", "5", e2),
                                                    ("3", str(len(small)), etag)]
    assert find_text(find_all(doc, "{ns}Part")[2], "{ns}LastModified") == modified
    assert not (lake / "upc" / "dst.bin").exists()
    # the two ranges, from the two sources (the whole-source part 3 is left out)
    doc = xml_of(s3.post("/lake/upc/dst.bin", _complete_xml([(1, e1), (2, e2)]),
                         query=f"uploadId={uid}"))
    assert find_text(doc, "{ns}ETag") == multipart_etag(
        [hashlib.md5(big[100:5 * MiB + 100]).digest(), hashlib.md5(small[4:9]).digest()])
    assert (lake / "upc" / "dst.bin").read_bytes() == big[100:5 * MiB + 100] + small[4:9]
    assert (lake / "upc" / "big.bin").read_bytes() == big  # the sources are untouched
    assert leftovers(lake) == []


def test_upload_part_copy_refusals(s3: S3, lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uid = _create(s3, "/lake/upc/refused.bin")
    path, src = "/lake/upc/refused.bin", "lake/sales/b.csv"  # 10 bytes
    for bad in ("byte=1-2", "bytes=invalid-range", "bytes=5-2", "bytes=-2-3", "bytes=aa-1",
                "bytes=1-aa", "bytes=3-", "bytes=-3", "bytes=0-1,3-4", "bytes=+1-2"):
        message = error_code(_copy_part(s3, path, uid, 1, src, {"x-amz-copy-source-range": bad}),
                             400, "InvalidArgument")
        assert "bytes=first-last" in message, bad
    for outside in ("bytes=0-10", "bytes=10-12", "bytes=100-200"):
        message = error_code(_copy_part(s3, path, uid, 1, src,
                                        {"x-amz-copy-source-range": outside}),
                             400, "InvalidArgument")
        assert message == "Range specified is not valid for source object of size: 10"
    assert _copy_result(_copy_part(s3, path, uid, 1, src, {
        "x-amz-copy-source-range": "bytes=9-9"}))[0] == md5_etag(b"9")
    # the copy-source conditions, as CopyObject evaluates them
    etag = s3.head("/lake/sales/b.csv").headers["etag"]
    old, future = "Sat, 01 Jan 2000 00:00:00 GMT", "Fri, 01 Jan 2100 00:00:00 GMT"
    for failing in ({"x-amz-copy-source-if-match": '"nope"'},
                    {"x-amz-copy-source-if-none-match": etag},
                    {"x-amz-copy-source-if-unmodified-since": old},
                    {"x-amz-copy-source-if-modified-since": future}):
        error_code(_copy_part(s3, path, uid, 2, src, failing), 412, "PreconditionFailed")
    for holding in ({"x-amz-copy-source-if-match": etag},
                    {"x-amz-copy-source-if-match": etag,  # If-Match wins, as RFC 7232 says
                     "x-amz-copy-source-if-unmodified-since": old},
                    {"x-amz-copy-source-if-none-match": '"other"',
                     "x-amz-copy-source-if-modified-since": old}):
        assert _copy_part(s3, path, uid, 2, src, holding).status_code == 200
    error_code(_copy_part(s3, path, uid, 3, "lake/none.csv"), 404, "NoSuchKey")
    error_code(_copy_part(s3, path, uid, 3, "nobucket/x.csv"), 404, "NoSuchBucket")
    error_code(_copy_part(s3, path, uid, 3, "lake/sales/"), 400, "InvalidArgument")  # a folder
    error_code(_copy_part(s3, path, uid, 3, "lake/sales"), 404, "NoSuchKey")
    error_code(_copy_part(s3, path, uid, 3, "lake"), 400, "InvalidArgument")
    error_code(_copy_part(s3, path, uid, 3, f"catalog/.s3-uploads/{uid}/upload.json"), 403,
               "AccessDenied")
    error_code(_copy_part(s3, "/lake/upc/other.bin", uid, 3, src), 404, "NoSuchUpload")
    error_code(_copy_part(s3, path, "0" * 32, 3, src), 404, "NoSuchUpload")
    error_code(_copy_part(s3, path, uid, 0, src), 400, "InvalidArgument")
    error_code(s3.put(path, b"x", query=f"partNumber=3&uploadId={uid}",
                      headers={"x-amz-copy-source-range": "bytes=0-0"}), 400, "InvalidArgument")
    monkeypatch.setattr("api.s3.app.MAX_PART_BYTES", 4)
    error_code(_copy_part(s3, path, uid, 3, src), 400, "EntityTooLarge")
    assert _copy_part(s3, path, uid, 3, src, {"x-amz-copy-source-range": "bytes=2-5"}
                      ).status_code == 200
    doc = xml_of(s3.get(path, query=f"uploadId={uid}"))
    assert [(find_text(p, "{ns}PartNumber"), find_text(p, "{ns}Size"))
            for p in find_all(doc, "{ns}Part")] == [("1", "1"), ("2", "10"), ("3", "4")]


def test_upload_part_copy_source_changing_while_read(s3: S3, lake: Path, gateway: S3Gateway,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    uid = _create(s3, "/lake/upc/changed.bin")
    from api.s3.objects import ChunkReader

    real = gateway.store.open_range

    def shrunk(bucket: str, info: Any, start: int, end: int, **kw: Any) -> Any:
        reader = real(bucket, info, start, end, **kw)
        first = next(iter(reader))
        reader.close()
        return ChunkReader(iter([first[:3]]))  # the file lost bytes under the reader

    monkeypatch.setattr(gateway.store, "open_range", shrunk)
    error_code(_copy_part(s3, "/lake/upc/changed.bin", uid, 1, "lake/sales/b.csv"), 412,
               "PreconditionFailed")
    doc = xml_of(s3.get("/lake/upc/changed.bin", query=f"uploadId={uid}"))
    assert find_all(doc, "{ns}Part") == []  # nothing staged


def test_upload_part_copy_keeps_a_slow_copy_alive(s3: S3, gateway: S3Gateway,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("api.s3.app.KEEPALIVE_S", 0.05)
    real = gateway.store.copy_part

    def slow(*args: Any) -> Any:
        time.sleep(0.3)
        return real(*args)

    monkeypatch.setattr(gateway.store, "copy_part", slow)
    uid = _create(s3, "/lake/upc/slow.bin")
    r = _copy_part(s3, "/lake/upc/slow.bin", uid, 1, "lake/sales/b.csv")
    assert r.status_code == 200 and b"<CopyPartResult" in r.content
    assert r.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n ')  # whitespace sent
    assert _copy_result(r)[0] == md5_etag(b"0123456789")

    def failing(*args: Any) -> Any:
        time.sleep(0.3)
        raise S3Error("PreconditionFailed", "the source object changed while it was read")

    monkeypatch.setattr(gateway.store, "copy_part", failing)
    r = _copy_part(s3, "/lake/upc/slow.bin", uid, 2, "lake/sales/b.csv")
    assert r.status_code == 200 and b"<Error><Code>PreconditionFailed</Code>" in r.content


# -- ListMultipartUploads ------------------------------------------------------------------------


def _uploads_page(s3: S3, query: str) -> tuple[list[tuple[str, str]], list[str], Any]:
    doc = xml_of(s3.get("/lake", query="uploads" + (f"&{query}" if query else "")))
    assert doc.tag == f"{NS_XML}ListMultipartUploadsResult"
    ups = [(find_text(u, "{ns}Key") or "", find_text(u, "{ns}UploadId") or "")
           for u in find_all(doc, "{ns}Upload")]
    return ups, prefixes_of(doc), doc


def test_list_uploads_pages_by_key_then_initiation(s3: S3) -> None:
    created: list[tuple[str, str]] = []
    for key in ("m/b", "m/a", "m/b", "m/c", "m/a", "m/b", "m/a"):
        created.append((key, _create(s3, f"/lake/{key}")))
    expected = sorted(created, key=lambda t: t[0])  # stable: each key's in creation order
    ups, _, doc = _uploads_page(s3, "")
    assert ups == expected and find_text(doc, "{ns}MaxUploads") == "1000"
    assert find_text(doc, "{ns}IsTruncated") == "false"
    assert find_text(doc, "{ns}NextKeyMarker") is None
    seen: list[tuple[str, str]] = []
    query, pages = "max-uploads=3", 0
    while True:
        ups, _, doc = _uploads_page(s3, query)
        pages += 1
        seen += ups
        if find_text(doc, "{ns}IsTruncated") == "false":
            assert len(ups) == 1
            break
        assert len(ups) == 3
        assert find_text(doc, "{ns}NextKeyMarker") == ups[-1][0]
        assert find_text(doc, "{ns}NextUploadIdMarker") == ups[-1][1]
        query = (f"max-uploads=3&key-marker={quote(ups[-1][0], safe='')}"
                 f"&upload-id-marker={ups[-1][1]}")
    assert pages == 3 and seen == expected
    # key-marker alone: keys after it; with upload-id-marker: that key's later uploads too
    assert _uploads_page(s3, "key-marker=m/a")[0] == expected[3:]
    assert _uploads_page(s3, f"key-marker=m/a&upload-id-marker={expected[0][1]}")[0] == \
        expected[1:]
    assert _uploads_page(s3, "key-marker=m/z")[0] == []
    assert _uploads_page(s3, f"upload-id-marker={expected[4][1]}")[0] == expected  # ignored
    # a marker naming an upload that is gone keeps its place (its ID holds its start time)
    gone = expected[4]
    assert s3.delete(f"/lake/{gone[0]}", query=f"uploadId={gone[1]}").status_code == 204
    assert _uploads_page(s3, f"key-marker={gone[0]}&upload-id-marker={gone[1]}")[0] == \
        expected[5:]
    error_code(s3.get("/lake", query="uploads&key-marker=m/a&upload-id-marker=zz"), 400,
               "InvalidArgument")
    for bad in ("abc", "-1", "1.5", "1_0", ""):
        error_code(s3.get("/lake", query=f"uploads&max-uploads={bad}"), 400, "InvalidArgument")
    assert find_text(_uploads_page(s3, "max-uploads=5000")[2], "{ns}MaxUploads") == "1000"
    ups, _, doc = _uploads_page(s3, "max-uploads=0")
    assert ups == [] and find_text(doc, "{ns}IsTruncated") == "false"
    error_code(s3.get("/nobucket", query="uploads"), 404, "NoSuchBucket")


def test_list_uploads_prefix_delimiter_and_encoding(s3: S3) -> None:
    ids = {key: _create(s3, f"/lake/{key}") for key in (
        "d/x/1", "d/x/2", "d/y", "d/z/3", "e/1", "d/sp ace")}
    ups, prefixes, doc = _uploads_page(s3, "prefix=d/&delimiter=/")
    assert ups == [("d/sp ace", ids["d/sp ace"]), ("d/y", ids["d/y"])]
    assert prefixes == ["d/x/", "d/z/"]
    assert (find_text(doc, "{ns}Prefix"), find_text(doc, "{ns}Delimiter")) == ("d/", "/")
    assert find_text(doc, "{ns}EncodingType") is None
    # one entry a page: a common prefix counts once and is not repeated on the next page
    seen: list[str] = []
    query = "prefix=d/&delimiter=/&max-uploads=1"
    for _ in range(10):
        ups, prefixes, doc = _uploads_page(s3, query)
        assert len(ups) + len(prefixes) == 1
        seen += [k for k, _ in ups] + prefixes
        if find_text(doc, "{ns}IsTruncated") == "false":
            break
        marker = find_text(doc, "{ns}NextKeyMarker") or ""
        assert marker == seen[-1]
        query = f"prefix=d/&delimiter=/&max-uploads=1&key-marker={quote(marker, safe='')}"
        id_marker = find_text(doc, "{ns}NextUploadIdMarker")
        assert (id_marker is None) == bool(prefixes)
        if id_marker:
            query += f"&upload-id-marker={id_marker}"
    assert seen == ["d/sp ace", "d/x/", "d/y", "d/z/"]
    assert _uploads_page(s3, "delimiter=/")[1] == ["d/", "e/"]
    assert [k for k, _ in _uploads_page(s3, "prefix=d/x/")[0]] == ["d/x/1", "d/x/2"]
    ups, prefixes, doc = _uploads_page(s3, "prefix=d/&delimiter=/&encoding-type=url&"
                                           "key-marker=d/a%20b")
    assert [k for k, _ in ups] == ["d/sp%20ace", "d/y"]
    assert find_text(doc, "{ns}EncodingType") == "url"
    assert find_text(doc, "{ns}KeyMarker") == "d/a%20b"
    error_code(s3.get("/lake", query="uploads&encoding-type=base64"), 400, "InvalidArgument")
