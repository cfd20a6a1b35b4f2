"""The S3 gateway on a real uvicorn server (127.0.0.1) read and written by real clients: boto3
(plain and over TLS, where its default is aws-chunked with a trailing CRC32), pyarrow's
S3FileSystem (the AWS SDK for C++), DuckDB's httpfs, and the gateway started by ``StrataServer``."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from api.s3.app import S3Gateway
from api.s3.auth import Credentials
from catalog.fs.namespace import Namespace
from catalog.store import StateStore
from tests.support.ports import LOOPBACK, free_port
from tests.support.s3_gateway import GatewayServer, self_signed_cert

pytestmark = pytest.mark.integration

ACCESS = "AKIDGATEWAYTEST"
SECRET = "gateway-integration-secret"
REGION = "us-east-1"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gw") / "lake"
    root.mkdir()
    return root


@pytest.fixture(scope="module")
def ns(lake: Path) -> Iterator[Namespace]:
    namespace = Namespace(StateStore(lake.parent / "state"))
    namespace.mount("/lake", str(lake))
    yield namespace
    namespace.close()


@pytest.fixture(scope="module")
def app(ns: Namespace, lake: Path) -> S3Gateway:
    return S3Gateway(ns, credentials=Credentials(ACCESS, SECRET, REGION), region=REGION,
                     max_object_bytes=1024 * MiB, spool_dir=lake.parent / "spool")


@pytest.fixture(scope="module")
def gateway(app: S3Gateway) -> Iterator[GatewayServer]:
    with GatewayServer(app) as gw:
        yield gw


def boto(endpoint: str, **config: Any) -> Any:
    import boto3
    from botocore.config import Config

    verify = config.pop("verify", None)
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
        region_name=REGION, verify=verify,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      signature_version="s3v4", **config))


@pytest.fixture(scope="module")
def client(gateway: GatewayServer) -> Any:
    return boto(gateway.endpoint)


def test_boto3_put_get_range_head_copy_delete(client: Any, lake: Path) -> None:
    data = os.urandom(300_000)
    put = client.put_object(Bucket="lake", Key="b3/obj.bin", Body=data)
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert (lake / "b3" / "obj.bin").read_bytes() == data
    got = client.get_object(Bucket="lake", Key="b3/obj.bin")
    assert got["Body"].read() == data and got["ETag"] == put["ETag"]
    part = client.get_object(Bucket="lake", Key="b3/obj.bin", Range="bytes=100-199")
    assert part["Body"].read() == data[100:200] and part["ContentRange"] == "bytes 100-199/300000"
    head = client.head_object(Bucket="lake", Key="b3/obj.bin")
    assert head["ContentLength"] == 300_000 and head["ETag"] == put["ETag"]
    copied = client.copy_object(Bucket="lake", Key="b3/copy.bin",
                                CopySource={"Bucket": "lake", "Key": "b3/obj.bin"})
    assert copied["CopyObjectResult"]["ETag"] == put["ETag"]
    assert (lake / "b3" / "copy.bin").read_bytes() == data
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as e:
        client.get_object(Bucket="lake", Key="b3/none")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        client.put_object(Bucket="lake", Key="b3/obj.bin", Body=b"x", IfNoneMatch="*")
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    client.delete_object(Bucket="lake", Key="b3/copy.bin")
    assert not (lake / "b3" / "copy.bin").exists()
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["catalog", "lake"]
    client.head_bucket(Bucket="lake")


def test_boto3_listing_1500_keys(client: Any, lake: Path) -> None:
    for i in range(1500):
        folder = lake / "many" / f"g{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"k{i:05d}.txt").write_bytes(b"x")
    pages = list(client.get_paginator("list_objects_v2").paginate(Bucket="lake",
                                                                   Prefix="many/"))
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert len(pages) == 2 and len(keys) == 1500 and keys == sorted(keys)
    assert len(set(keys)) == 1500
    small = list(client.get_paginator("list_objects_v2").paginate(
        Bucket="lake", Prefix="many/g1/", PaginationConfig={"PageSize": 200}))
    assert sum(p["KeyCount"] for p in small) == 500 and len(small) == 3
    top = client.list_objects_v2(Bucket="lake", Prefix="many/", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["many/g0/", "many/g1/", "many/g2/"]
    v1 = list(client.get_paginator("list_objects").paginate(Bucket="lake", Prefix="many/g2/"))
    assert sum(len(p.get("Contents", [])) for p in v1) == 500
    batch = [{"Key": k} for k in keys[:250]]
    out = client.delete_objects(Bucket="lake", Delete={"Objects": batch, "Quiet": True})
    assert not out.get("Errors")
    left = sum(p["KeyCount"] for p in client.get_paginator("list_objects_v2").paginate(
        Bucket="lake", Prefix="many/"))
    assert left == 1250


def test_boto3_multipart_upload(client: Any, lake: Path, tmp_path: Path) -> None:
    from boto3.s3.transfer import TransferConfig

    data = os.urandom(12 * MiB)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    client.upload_file(str(src), "lake", "mp/big.bin", Config=TransferConfig(
        multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2))
    assert (lake / "mp" / "big.bin").read_bytes() == data
    head = client.head_object(Bucket="lake", Key="mp/big.bin")
    md5s = [hashlib.md5(data[i:i + 5 * MiB]).digest() for i in range(0, len(data), 5 * MiB)]
    assert head["ETag"] == f'"{hashlib.md5(b"".join(md5s)).hexdigest()}-3"'
    assert client.list_multipart_uploads(Bucket="lake").get("Uploads", []) == []
    up = client.create_multipart_upload(Bucket="lake", Key="mp/aborted.bin")
    client.upload_part(Bucket="lake", Key="mp/aborted.bin", UploadId=up["UploadId"],
                       PartNumber=1, Body=b"x" * 1000)
    parts = client.list_parts(Bucket="lake", Key="mp/aborted.bin", UploadId=up["UploadId"])
    assert [p["Size"] for p in parts["Parts"]] == [1000]
    client.abort_multipart_upload(Bucket="lake", Key="mp/aborted.bin", UploadId=up["UploadId"])
    assert not (lake / "mp" / "aborted.bin").exists()
    target = tmp_path / "down.bin"
    client.download_file("lake", "mp/big.bin", str(target),
                         Config=TransferConfig(multipart_threshold=4 * MiB,
                                               multipart_chunksize=4 * MiB))
    assert target.read_bytes() == data


def test_boto3_presigned_get(client: Any, gateway: GatewayServer, lake: Path) -> None:
    (lake / "pre.txt").write_bytes(b"presigned body")
    url = client.generate_presigned_url("get_object", Params={"Bucket": "lake",
                                                              "Key": "pre.txt"}, ExpiresIn=60)
    assert "X-Amz-Signature=" in url
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"presigned body"
    assert httpx.get(url.replace("pre.txt", "other.txt")).status_code == 403
    assert httpx.get(f"{gateway.endpoint}/lake/pre.txt").status_code == 403  # unsigned
    import boto3
    from botocore.config import Config

    v2 = boto3.session.Session().client(  # Signature Version 2 is refused, with a hint
        "s3", endpoint_url=gateway.endpoint, aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET, region_name=REGION,
        config=Config(signature_version="s3", s3={"addressing_style": "path"}))
    r = httpx.get(v2.generate_presigned_url("get_object", Params={"Bucket": "lake",
                                                                  "Key": "pre.txt"}))
    assert r.status_code == 400 and b"s3v4" in r.content


def test_boto3_default_aws_chunked_over_tls(app: S3Gateway, lake: Path, tmp_path: Path) -> None:
    tls = self_signed_cert(tmp_path)
    if tls is None:
        pytest.skip("openssl is not installed")
    seen: list[dict[str, Any]] = []
    with GatewayServer(app, tls=tls) as gw:
        c = boto(gw.endpoint, verify=str(tls[0]))
        c.meta.events.register("before-send.s3.PutObject",
                               lambda request, **_: seen.append(dict(request.headers.items())))
        data = os.urandom(2 * MiB + 5)
        c.put_object(Bucket="lake", Key="tls/chunked.bin", Body=data)
        assert (lake / "tls" / "chunked.bin").read_bytes() == data
        got = c.get_object(Bucket="lake", Key="tls/chunked.bin", ChecksumMode="ENABLED")
        assert got["Body"].read() == data
        c.close()
    sent = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in seen[0].items()}
    assert sent["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert sent["x-amz-trailer"] == "x-amz-checksum-crc32"


def test_pyarrow_s3filesystem_reads_and_writes(gateway: GatewayServer, lake: Path) -> None:
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs

    (lake / "pa" / "ds").mkdir(parents=True)
    for i in range(3):
        pq.write_table(pa.table({"id": list(range(i * 10, i * 10 + 10)), "p": [i] * 10}),
                       lake / "pa" / "ds" / f"part-{i}.parquet")
    s3fs = pafs.S3FileSystem(access_key=ACCESS, secret_key=SECRET, region=REGION,
                             endpoint_override=f"{LOOPBACK}:{gateway.port}", scheme="http")
    table = pq.read_table("lake/pa/ds/part-1.parquet", filesystem=s3fs)
    assert table.column("id").to_pylist() == list(range(10, 20))
    dataset = ds.dataset("lake/pa/ds", format="parquet", filesystem=s3fs)
    assert dataset.count_rows() == 30 and len(dataset.files) == 3
    info = s3fs.get_file_info("lake/pa/ds")
    assert info.type == pafs.FileType.Directory
    written = pa.table({"x": list(range(100_000))})
    pq.write_table(written, "lake/pa/out/w.parquet", filesystem=s3fs)
    assert pq.read_table(lake / "pa" / "out" / "w.parquet").equals(written)
    big = os.urandom(12 * MiB)  # the AWS SDK for C++ sends this as a multipart upload
    with s3fs.open_output_stream("lake/pa/out/big.bin") as out:
        out.write(big)
    assert (lake / "pa" / "out" / "big.bin").read_bytes() == big
    s3fs.delete_file("lake/pa/out/big.bin")
    assert not (lake / "pa" / "out" / "big.bin").exists()


def _httpfs() -> str | None:
    import duckdb

    spec = importlib.util.find_spec("duckdb_extension_httpfs")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = (Path(list(spec.submodule_search_locations)[0]) / "extensions"
            / f"v{duckdb.__version__}" / "httpfs.duckdb_extension")
    return str(path) if path.exists() else None


def test_duckdb_httpfs_reads_a_glob(gateway: GatewayServer, lake: Path) -> None:
    import duckdb

    extension = _httpfs()
    if extension is None:
        pytest.skip("duckdb-extension-httpfs (matching duckdb) is not installed")
    (lake / "duck").mkdir()
    con = duckdb.connect()
    try:
        for i in range(4):
            con.execute(f"COPY (SELECT range AS id, {i} AS f FROM range({i * 100}, {i * 100 + 100}))"
                        f" TO '{lake / 'duck' / f'f{i}.parquet'}' (FORMAT parquet)")
        con.execute(f"LOAD '{extension}'")
        for setting, value in (("s3_endpoint", f"'{LOOPBACK}:{gateway.port}'"),
                               ("s3_url_style", "'path'"), ("s3_use_ssl", "false"),
                               ("s3_region", f"'{REGION}'"), ("s3_access_key_id", f"'{ACCESS}'"),
                               ("s3_secret_access_key", f"'{SECRET}'")):
            con.execute(f"SET {setting} = {value}")
        row = con.execute("SELECT count(*), sum(id) FROM "
                          "read_parquet('s3://lake/duck/*.parquet')").fetchone()
        assert row == (400, sum(range(400)))
        con.execute("COPY (SELECT range AS v FROM range(1000)) TO "
                    "'s3://lake/duck/out/written.parquet' (FORMAT parquet)")
        assert con.execute(f"SELECT count(*) FROM '{lake / 'duck/out/written.parquet'}'"
                           ).fetchone() == (1000,)
    finally:
        con.close()


def test_strata_server_runs_the_gateway(tmp_path: Path) -> None:
    from api.server import StrataServer
    from catalog.config import Settings

    settings = Settings(data_dir=tmp_path / "data", host=LOOPBACK, thrift_port=free_port(),
                        trino_thrift_port=0, rest_port=free_port(), s3_port=free_port(),
                        sync_interval_s=0, s3_access_key=ACCESS, s3_secret_key=SecretStr(SECRET))
    server = StrataServer(settings).start()
    try:
        server.wait_started()
        listeners = {entry["name"]: entry for entry in server.status()["listeners"]}
        assert listeners["s3"] == {"name": "s3", "protocol": "http", "host": LOOPBACK,
                                   "port": settings.s3_port}
        c = boto(f"http://{LOOPBACK}:{settings.s3_port}")
        c.put_object(Bucket="catalog", Key="hello/x.txt", Body=b"hi")
        assert (tmp_path / "data" / "catalog" / "hello" / "x.txt").read_bytes() == b"hi"
        assert c.get_object(Bucket="catalog", Key="hello/x.txt")["Body"].read() == b"hi"
    finally:
        server.stop()


@pytest.mark.trino
def test_trino_writes_and_reads_through_the_gateway(gateway: GatewayServer, lake: Path,
                                                     tmp_path: Path, app: S3Gateway) -> None:
    """Trino 476's native S3 file system on the gateway, with Trino's own file metastore kept
    on the gateway too: CREATE TABLE AS, INSERT, SELECT, DROP TABLE."""
    from tests.support.trino import TrinoServer, trino_available, trino_unavailable_reason

    if not trino_available():
        pytest.skip(trino_unavailable_reason() or "Trino is not available")
    seen: list[tuple[str, str]] = []
    route = app._route

    async def spy(c: Any) -> Any:
        seen.append((c.method, ",".join(sorted(k for k in c.query))
                     + ("|if-none-match" if "if-none-match" in c.headers else "")))
        return await route(c)

    app._route = spy  # type: ignore[method-assign]
    overrides = {"hive.metastore.uri": None, "hive.metastore": "file",
                 "hive.metastore.catalog.dir": "s3://lake/trino-metastore",
                 "s3.endpoint": f"http://{LOOPBACK}:{gateway.port}",
                 "s3.aws-access-key": ACCESS, "s3.aws-secret-key": SECRET,
                 "hive.metastore-cache-ttl": None, "hive.metastore-refresh-interval": None,
                 "hive.metastore-cache-maximum-size": None,
                 "hive.metastore-cache.cache-missing": None,
                 "hive.metastore-stats-cache-ttl": None}
    try:
        with TrinoServer(tmp_path / "trino", {"gw": "thrift://unused:1"},
                         catalog_overrides=overrides) as trino:
            trino.execute("CREATE SCHEMA gw.s")  # managed: under hive.metastore.catalog.dir
            trino.execute("CREATE TABLE gw.s.t WITH (format = 'PARQUET') AS "
                          "SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS v(id, name)")
            assert trino.query("SELECT count(*), sum(id) FROM gw.s.t") == [(2, 3)]
            trino.execute("INSERT INTO gw.s.t VALUES (3, 'c')")
            assert sorted(trino.query("SELECT id, name FROM gw.s.t")) == [
                (1, "a"), (2, "b"), (3, "c")]
            table_dir = lake / "trino-metastore" / "s" / "t"
            data = [p for p in table_dir.rglob("*") if p.is_file() and not p.name.startswith(".")]
            assert len(data) >= 2, list(table_dir.rglob("*"))
            trino.execute("DROP TABLE gw.s.t")
            assert not table_dir.exists() or not any(p.is_file() for p in table_dir.rglob("*"))
    finally:
        app._route = route  # type: ignore[method-assign]
    assert any(op.endswith("|if-none-match") for m, op in seen if m == "PUT"), seen  # exclusive
    assert ("POST", "delete") in seen, seen  # DROP TABLE deletes the files in batches


def test_gateway_over_an_s3_mount(app: S3Gateway, ns: Namespace, client: Any,
                                  tmp_path: Path) -> None:
    """A bucket of a real S3 server (moto) mounted in the namespace, written and read through
    the gateway: bodies spooled then uploaded, multipart objects written in one stream."""
    from tests.support.s3 import MotoS3Server, s3_options

    with MotoS3Server(tmp_path / "moto") as moto:
        moto.client().create_bucket(Bucket="remote")
        ns.mount("/remote", "s3://remote/base", s3_options(moto.endpoint, moto.access_key,
                                                          moto.secret_key, moto.region))
        try:
            data = os.urandom(200_000)
            put = client.put_object(Bucket="remote", Key="x/y.bin", Body=data)
            assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
            direct = moto.client().get_object(Bucket="remote", Key="base/x/y.bin")
            assert direct["Body"].read() == data
            got = client.get_object(Bucket="remote", Key="x/y.bin", Range="bytes=10-19")
            assert got["Body"].read() == data[10:20]
            assert client.head_object(Bucket="remote", Key="x/y.bin")["ETag"] == put["ETag"]
            listed = client.list_objects_v2(Bucket="remote", Prefix="x/")
            assert [o["Key"] for o in listed["Contents"]] == ["x/y.bin"]
            up = client.create_multipart_upload(Bucket="remote", Key="x/mp.bin")
            p1, p2 = os.urandom(5 * MiB), os.urandom(10)
            e1 = client.upload_part(Bucket="remote", Key="x/mp.bin", UploadId=up["UploadId"],
                                    PartNumber=1, Body=p1)["ETag"]
            e2 = client.upload_part(Bucket="remote", Key="x/mp.bin", UploadId=up["UploadId"],
                                    PartNumber=2, Body=p2)["ETag"]
            client.complete_multipart_upload(
                Bucket="remote", Key="x/mp.bin", UploadId=up["UploadId"],
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1},
                                           {"PartNumber": 2, "ETag": e2}]})
            whole = moto.client().get_object(Bucket="remote", Key="base/x/mp.bin")
            assert whole["Body"].read() == p1 + p2
            client.delete_objects(Bucket="remote", Delete={"Objects": [
                {"Key": "x/y.bin"}, {"Key": "x/mp.bin"}]})
            left = moto.client().list_objects_v2(Bucket="remote", Prefix="base/x")["Contents"]
            # pyarrow keeps the emptied folder as a marker object: listed as the folder 'x/'
            assert [(o["Key"], o["Size"]) for o in left] == [("base/x/", 0)]
            assert [o["Key"] for o in client.list_objects_v2(Bucket="remote")["Contents"]] == [
                "x/"]
        finally:
            ns.unmount("/remote")


def test_boto3_upload_part_copy_and_listing_uploads(client: Any, lake: Path) -> None:
    """UploadPartCopy (a range of one object, the whole of another) completed into one object,
    and boto3's ListMultipartUploads paginator following NextKeyMarker / NextUploadIdMarker."""
    big, small = os.urandom(5 * MiB + 10), b"copied whole"
    client.put_object(Bucket="lake", Key="upc/big.bin", Body=big)
    client.put_object(Bucket="lake", Key="upc/small.txt", Body=small)
    up = client.create_multipart_upload(Bucket="lake", Key="upc/joined.bin")
    r1 = client.upload_part_copy(Bucket="lake", Key="upc/joined.bin", UploadId=up["UploadId"],
                                 PartNumber=1, CopySource={"Bucket": "lake", "Key": "upc/big.bin"},
                                 CopySourceRange=f"bytes=5-{5 * MiB + 4}")
    r2 = client.upload_part_copy(Bucket="lake", Key="upc/joined.bin", UploadId=up["UploadId"],
                                 PartNumber=2, CopySource="lake/upc/small.txt",
                                 CopySourceIfMatch=f'"{hashlib.md5(small).hexdigest()}"')
    e1, e2 = r1["CopyPartResult"]["ETag"], r2["CopyPartResult"]["ETag"]
    assert e1 == f'"{hashlib.md5(big[5:5 * MiB + 5]).hexdigest()}"'
    assert r2["CopyPartResult"]["LastModified"].year >= 2024
    with pytest.raises(client.exceptions.ClientError) as failed:
        client.upload_part_copy(Bucket="lake", Key="upc/joined.bin", UploadId=up["UploadId"],
                                PartNumber=3, CopySource="lake/upc/small.txt",
                                CopySourceRange="bytes=0-100")
    assert failed.value.response["Error"]["Code"] == "InvalidArgument"
    others = [client.create_multipart_upload(Bucket="lake", Key=f"upc/list/{k}")["UploadId"]
              for k in ("b", "a", "b", "c", "a")]
    pages = list(client.get_paginator("list_multipart_uploads").paginate(
        Bucket="lake", Prefix="upc/", PaginationConfig={"PageSize": 2}))
    listed = [(u["Key"], u["UploadId"]) for p in pages for u in p.get("Uploads", [])]
    assert len(pages) == 3 and len(listed) == 6 and listed[0] == ("upc/joined.bin",
                                                                   up["UploadId"])
    assert [k for k, _ in listed[1:]] == ["upc/list/a", "upc/list/a", "upc/list/b",
                                          "upc/list/b", "upc/list/c"]
    assert [i for k, i in listed if k == "upc/list/b"] == [others[0], others[2]]
    top = client.list_multipart_uploads(Bucket="lake", Prefix="upc/", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["upc/list/"]
    for key, upload_id in listed[1:]:
        client.abort_multipart_upload(Bucket="lake", Key=key, UploadId=upload_id)
    client.complete_multipart_upload(
        Bucket="lake", Key="upc/joined.bin", UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert (lake / "upc" / "joined.bin").read_bytes() == big[5:5 * MiB + 5] + small
    assert client.list_multipart_uploads(Bucket="lake").get("Uploads", []) == []
