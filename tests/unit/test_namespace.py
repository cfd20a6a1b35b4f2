"""The unified namespace over local directories: mount table, resolver, browsing, persistence."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catalog.config import Settings
from catalog.exceptions import (
    AlreadyExistsError,
    InUseError,
    InvalidInputError,
    InvalidOptionError,
    NoSuchPathError,
    ReadOnlyError,
    UfsUnavailableError,
)
from catalog.fs.fingerprint import ABSENT
from catalog.fs.namespace import CATALOG_ROOT, Namespace, normalize_path, redact
from catalog.service import CatalogService
from catalog.store import StateStore


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


@pytest.fixture
def ns(tmp_path: Path) -> Namespace:
    return Namespace(StateStore(tmp_path / "state"))


def test_catalog_root_is_mounted_on_the_data_dir(ns: Namespace, tmp_path: Path) -> None:
    (root,) = ns.mounts()
    assert (root.path, root.builtin) == (CATALOG_ROOT, True)
    assert root.ufs_uri == (tmp_path / "state" / "catalog").as_uri()
    assert (tmp_path / "state" / "catalog").is_dir()
    ns.write_bytes("/catalog/db/x.txt", b"hello")
    assert (tmp_path / "state" / "catalog" / "db" / "x.txt").read_bytes() == b"hello"
    with pytest.raises(InUseError, match="own root"):
        ns.unmount(CATALOG_ROOT)
    with pytest.raises(InvalidInputError, match="own root"):
        ns.mount("/catalog/sub", (tmp_path / "lake").as_uri())


def test_mount_resolve_reverse_ls_stat_cat(ns: Namespace, tmp_path: Path) -> None:
    lake = tree(tmp_path / "lake", {"sales/a.csv": b"x,y\n1,2\n", "sales/b.csv": b"x,y\n"})
    m = ns.mount("/lake/", str(lake))  # a plain path works, trailing '/' is normalized
    assert (m.path, m.ufs_uri, m.readonly) == ("/lake", lake.as_uri(), False)
    mount, uri = ns.resolve("/lake/sales/a.csv")
    assert (mount.path, uri) == ("/lake", f"{lake.as_uri()}/sales/a.csv")
    found = ns.reverse(f"{lake.as_uri()}/sales")
    assert found is not None and (found[0].path, found[1]) == ("/lake", "/lake/sales")
    assert ns.reverse((tmp_path / "elsewhere").as_uri()) is None
    assert [e.name for e in ns.ls("/")] == ["catalog", "lake"]
    assert all(e.mount_point for e in ns.ls("/"))
    entries = ns.ls("/lake/sales")
    assert [(e.name, e.is_dir, e.size) for e in entries] == [("a.csv", False, 8),
                                                            ("b.csv", False, 4)]
    st = ns.stat("/lake/sales/a.csv")
    assert (st.is_dir, st.size, st.ufs_uri) == (False, 8, f"{lake.as_uri()}/sales/a.csv")
    assert st.mtime_ns == os.stat(lake / "sales" / "a.csv").st_mtime_ns
    assert ns.read("/lake/sales/a.csv") == b"x,y\n1,2\n"
    assert ns.read("/lake/sales/a.csv", 4, 3) == b"1,2"
    with pytest.raises(NoSuchPathError, match="/lake/nope"):
        ns.stat("/lake/nope")
    with pytest.raises(NoSuchPathError):
        ns.ls("/lake/nope")
    with pytest.raises(NoSuchPathError, match="no mount"):
        ns.resolve("/other/x")


def test_nested_mounts_longest_prefix_wins(ns: Namespace, tmp_path: Path) -> None:
    outer = tree(tmp_path / "outer", {"f.txt": b"outer"})
    inner = tree(tmp_path / "inner", {"f.txt": b"inner"})
    ns.mount("/lake", str(outer))
    ns.mount("/lake/raw", str(inner))
    assert ns.read("/lake/f.txt") == b"outer"
    assert ns.read("/lake/raw/f.txt") == b"inner"
    names = {e.name: e.mount_point for e in ns.ls("/lake")}
    assert names == {"f.txt": False, "raw": True}
    # The mount point may not shadow data of the parent mount.
    (outer / "taken").mkdir()
    with pytest.raises(AlreadyExistsError, match="exists in the mount /lake"):
        ns.mount("/lake/taken", str(tree(tmp_path / "x", {"a": b"1"})))


def test_mount_validation(ns: Namespace, tmp_path: Path) -> None:
    lake = tree(tmp_path / "lake", {"a": b"1"})
    ns.mount("/lake", str(lake))
    with pytest.raises(AlreadyExistsError, match="mount point already"):
        ns.mount("/lake", str(tree(tmp_path / "other", {"a": b"1"})))
    with pytest.raises(InvalidInputError, match="overlaps"):
        ns.mount("/sub", str(lake / "deeper"))
    with pytest.raises(NoSuchPathError, match="no such directory"):
        ns.mount("/missing", str(tmp_path / "missing"))
    with pytest.raises(InvalidInputError, match="unsupported storage scheme 'hdfs'"):
        ns.mount("/h", "hdfs://nn/x")
    with pytest.raises(InvalidOptionError, match="unknown option.*s3.endpoint"):
        ns.mount("/o", str(tree(tmp_path / "o", {"a": b"1"})), {"s3.endpoint": "x"})
    with pytest.raises(InvalidOptionError, match="readonly must be true or false"):
        ns.mount("/o", str(tmp_path / "o"), {"readonly": "maybe"})
    for bad in ("relative", "/a/../b", "/a/./b", "/a\x00b", "/a\nb", "/"):
        with pytest.raises(InvalidInputError):
            ns.mount(bad, str(tmp_path / "o"))
    assert normalize_path("//a///b/") == "/a/b"


def test_readonly_mount_refuses_writes(ns: Namespace, tmp_path: Path) -> None:
    lake = tree(tmp_path / "lake", {"a.txt": b"1"})
    ns.mount("/ro", str(lake), {"readonly": "true"})
    for write in (lambda: ns.write_bytes("/ro/b.txt", b"2"), lambda: ns.delete("/ro/a.txt"),
                  lambda: ns.mkdirs("/ro/d")):
        with pytest.raises(ReadOnlyError, match="read-only"):
            write()
    assert sorted(p.name for p in lake.iterdir()) == ["a.txt"]
    assert ns.read("/ro/a.txt") == b"1"


def test_mounts_persist_and_unmount(tmp_path: Path) -> None:
    lake = tree(tmp_path / "lake", {"a.txt": b"1"})
    first = Namespace(StateStore(tmp_path / "state"))
    first.mount("/lake", str(lake), {"readonly": "true"})
    again = Namespace(StateStore(tmp_path / "state"))
    assert [(m.path, m.readonly) for m in again.mounts()] == [("/catalog", False),
                                                             ("/lake", True)]
    assert again.read("/lake/a.txt") == b"1"
    again.unmount("/lake")
    assert [m.path for m in Namespace(StateStore(tmp_path / "state")).mounts()] == ["/catalog"]
    with pytest.raises(NoSuchPathError, match="not a mount point"):
        again.unmount("/lake")


def test_secrets_are_redacted(tmp_path: Path) -> None:
    opts = {"s3.aws-access-key": "AK", "s3.aws-secret-key": "very-secret", "readonly": "true"}
    assert redact(opts) == {"s3.aws-access-key": "AK", "s3.aws-secret-key": "****",
                            "readonly": "true"}


def test_ufs_instances_are_cached_per_mount(ns: Namespace, tmp_path: Path) -> None:
    lake = tree(tmp_path / "lake", {"a.txt": b"1"})
    m = ns.mount("/lake", str(lake))
    assert ns.ufs(m) is ns.ufs(m)
    assert ns.ufs_for(f"{lake.as_uri()}/a.txt") is ns.ufs(m)
    other = (tmp_path / "x").as_uri()
    assert ns.ufs_for(other) is ns.ufs_for(other)


def test_fingerprints_parallel_equal_sequential(tmp_path: Path) -> None:
    root = tmp_path / "t"
    files = {f"p={i}/f{j}.csv": b"x" * (i + j) for i in range(40) for j in range(3)}
    files["p=1/_SUCCESS"] = b""
    files["p=2/.hidden/x"] = b"1"
    tree(root, files)
    locations = [f"{root.as_uri()}/p={i}" for i in range(40)] + [f"{root.as_uri()}/p=999"]
    parallel = Namespace(list_parallelism=8).fingerprints(locations)
    sequential = Namespace(list_parallelism=1).fingerprints(locations)
    assert parallel == sequential
    assert parallel[f"{root.as_uri()}/p=999"] == ABSENT
    assert parallel[f"{root.as_uri()}/p=1"].startswith("3:")  # _SUCCESS is hidden
    assert parallel[f"{root.as_uri()}/p=2"].startswith("3:")
    # A plain path and the file: URI are the same location.
    assert Namespace().fingerprint(str(root / "p=3")) == parallel[f"{root.as_uri()}/p=3"]
    assert Namespace().fingerprints(["hdfs://nn/warehouse/t"]) == {
        "hdfs://nn/warehouse/t": None}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory")
def test_unreadable_directory_is_unavailable_not_absent(tmp_path: Path) -> None:
    locked = tree(tmp_path / "locked", {"a": b"1"})
    locked.chmod(0)
    try:
        with pytest.raises(UfsUnavailableError):
            Namespace().fingerprints([locked.as_uri(), (tmp_path / "other").as_uri()])
    finally:
        locked.chmod(0o755)


def test_service_refuses_unmount_while_serving(tmp_path: Path) -> None:
    lake = tree(tmp_path / "lake", {"db1/items/a.csv": b"id,name\n1,a\n"})
    service = CatalogService(Settings(data_dir=tmp_path / "state", sync_interval_s=0))
    try:
        service.mount("/lake", str(lake))
        service.attach_database("directory", "strata:///lake", "db1")
        t = service.get_table("db1", "items")
        assert t.sd.location == f"{lake.as_uri()}/db1/items"  # served at the UFS URI
        owner = service.owner_of(f"{lake.as_uri()}/db1/items/a.csv")
        assert owner is not None and (owner.db, owner.table) == ("db1", "items")
        with pytest.raises(InUseError, match="database 'db1'"):
            service.unmount("/lake")
        service.detach_database("db1")
        service.unmount("/lake")
        assert [m.path for m in service.fs.mounts()] == ["/catalog"]
    finally:
        service.close()


def test_unmount_refused_while_a_table_is_served_from_it(tmp_path: Path) -> None:
    lake = tree(tmp_path / "lake", {"db1/items/a.csv": b"id,name\n1,a\n"})
    service = CatalogService(Settings(data_dir=tmp_path / "state", sync_interval_s=0))
    try:
        service.mount("/lake", str(lake))
        service.attach_database("directory", str(lake), "db1")  # by local path, not by mount
        with pytest.raises(InUseError, match="table 'db1.items'"):
            service.unmount("/lake")
    finally:
        service.close()
