"""Unparseable text values (definition key ``unparseable``): what counts as one, their file and
line, ``fail``'s error, ``side-file``'s side rows and files, the served data (the same as
``null``), and the job runner's garbage collection of side files."""

from __future__ import annotations

import bz2
import gzip
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.config import Settings
from catalog.exceptions import InvalidInputError
from catalog.fs.namespace import Namespace
from catalog.models import Column, Layout, Partition, SerDe, StorageDescriptor, Table
from catalog.service import CatalogService
from catalog.store import StateStore
from catalog.transform import source
from catalog.transform.definition import TransformDefinition, parse_definition
from catalog.transform.executor import execute_partition, unparseable_dir, unparseable_rows
from catalog.transform.planner import PartitionPlan
from catalog.transform.source import LAZY_SIMPLE_SERDE, OPEN_CSV_SERDE, UNPARSEABLE_SCHEMA
from tests.support.source_tables import write_text_files

COLS = [Column(name="k", type="int"), Column(name="s", type="string"),
        Column(name="d", type="double"), Column(name="dt", type="date"),
        Column(name="x", type="decimal(5,2)"), Column(name="b", type="boolean"),
        Column(name="ts", type="timestamp"), Column(name="bin", type="binary"),
        Column(name="v", type="varchar(3)")]
PARAMS = {"field.delim": "|"}


def _sd(params: dict[str, str] | None = None, cols: list[Column] = COLS,
        lib: str = LAZY_SIMPLE_SERDE) -> StorageDescriptor:
    return StorageDescriptor(columns=cols, serde=SerDe(serialization_lib=lib,
                                                       parameters=params or PARAMS))


class _Routes:
    """One checking batch reader per route (typed, VARCHAR, general) and a plain one."""

    def __init__(self, tmp_path: Path, params: dict[str, str] = PARAMS,
                 cols: list[Column] = COLS) -> None:
        con = duckdb.connect()
        schema = source._source_schema("lazy", cols)

        def reader(check: bool) -> source._BatchReader:
            return source._BatchReader("lazy", cols, params, schema, con, str(tmp_path),
                                       check=check)

        self.plain, self.typed, self.varchar, self.lines = (reader(False), reader(True),
                                                            reader(True), reader(True))
        self.varchar.typed_check = ""
        self.lines.fast = None

    def read(self, pieces: list[bytes], origins: list[source.Origin]
             ) -> tuple[list[dict[str, Any]], str]:
        """The side rows of ``pieces`` (all routes agree, and agree with the plain reader on
        the data) and the route the typed reader took."""
        before = dict(self.typed.routes)
        want = self.plain.tables(pieces)
        sides = []
        for r in (self.typed, self.varchar, self.lines):
            data, side = r.batch(pieces, origins)
            assert data.equals(want), (pieces, r.routes)
            rows = [] if side is None else side[0].to_pylist()
            if side is not None:
                assert side[0].schema.equals(UNPARSEABLE_SCHEMA)
                assert side[1] == len({(x["source_file"], x["line"]) for x in rows})
            sides.append(rows)
        assert sides[0] == sides[1] == sides[2], pieces
        route = next(k for k in ("typed", "refused", "varchar", "lines")
                     if self.typed.routes[k] > before[k])
        return sides[0], route


def _origins(pieces: list[bytes], uri: str = "f", first: int = 1) -> list[source.Origin]:
    out = []
    for p in pieces:
        out.append((uri, first, p.count(b"\n")))
        first += p.count(b"\n")
    return out


def _brief(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["line"], r["column"], r["value"]) for r in rows]


# -- what is unparseable ----------------------------------------------------------------------

GOOD = b"1|a|1.5|2024-01-01|1.25|true|2024-01-01 10:00:00|YWJj|abcd\n"


def test_every_parsed_type_and_route(tmp_path: Path) -> None:
    routes = _Routes(tmp_path)
    bad = (b"x|a|y|2024-13-01|1234.5|yes|2024-01-01 25:00|!!|abcd\n"
           b"+|b|1e|2024-02-30|.|t|noon|\\x|ab\n")
    rows, route = routes.read([GOOD + bad], _origins([GOOD + bad]))
    assert route == "varchar"  # the pattern check sent the batch there
    assert _brief(rows) == [
        (2, "k", "x"), (2, "d", "y"), (2, "dt", "2024-13-01"), (2, "x", "1234.5"),
        (2, "b", "yes"), (2, "ts", "2024-01-01 25:00"),
        (3, "k", "+"), (3, "d", "1e"), (3, "dt", "2024-02-30"), (3, "x", "."), (3, "b", "t"),
        (3, "ts", "noon")]
    assert rows[0]["raw_line"] == bad.split(b"\n")[0].decode()
    assert rows[0]["column_type"] == "int" and rows[3]["column_type"] == "decimal(5,2)"


def test_neither_null_format_nor_empty_nor_missing_nor_strings(tmp_path: Path) -> None:
    routes = _Routes(tmp_path)
    text = (b"\\N|\\N|\\N|\\N|\\N|\\N|\\N|\\N|\\N\n"  # the NULL format
            b"||||||||\n"  # empty fields: no value, not an unparseable one
            b"7\n"  # missing trailing fields
            b"\n"  # an empty line: one empty field
            b"8|any text|2|2024-01-01|1|FALSE|2024-01-01|not base64 !|toolong|extra|fields\n")
    rows, _ = routes.read([text], _origins([text]))
    assert rows == []


def test_typed_route_typed_columns_have_none(tmp_path: Path) -> None:
    """The typed route types ints, decimals, dates and booleans itself only when every field
    parses: its unparseable values are those of the columns typed by SQL (double,
    timestamp)."""
    routes = _Routes(tmp_path)
    text = GOOD + b"2|b|zz|2024-01-02|-0.5|FALSE|soon|YWJj|x\n"
    rows, route = routes.read([text], _origins([text]))
    assert route == "typed"
    assert _brief(rows) == [(2, "d", "zz"), (2, "ts", "soon")]
    # A field of the right shape that Hive reads as NULL makes DuckDB refuse the typed route.
    text = GOOD + b"99999999999|b|1|2024-01-02|1|true|2024-01-01|YWJj|x\n"
    rows, route = routes.read([text], _origins([text]))
    assert route == "refused"
    assert _brief(rows) == [(2, "k", "99999999999")]
    text = GOOD + b"1|b|1|2024-02-30|123.456|true|2024-01-01|YWJj|x\n"
    rows, route = routes.read([text], _origins([text]))
    assert route == "refused"
    assert _brief(rows) == [(2, "dt", "2024-02-30")]  # 123.456 rounds to 123.46: parseable


def test_other_null_format(tmp_path: Path) -> None:
    routes = _Routes(tmp_path, {"field.delim": ",", "serialization.null.format": "NA"})
    text = b"NA,a,NA\n\\N,b,nan\n,c,\n"
    rows, _ = routes.read([text], _origins([text]))
    assert _brief(rows) == [(2, "k", "\\N"), (2, "d", "nan")]  # Java reads NaN only


def test_empty_null_format(tmp_path: Path) -> None:
    routes = _Routes(tmp_path, {"field.delim": ",", "serialization.null.format": ""})
    text = b",,,\n1,,x,\n"
    rows, _ = routes.read([text], _origins([text]))
    assert _brief(rows) == [(2, "d", "x")]


def test_escapes_report_the_raw_field(tmp_path: Path) -> None:
    cols = [Column(name="k", type="int"), Column(name="s", type="string")]
    routes = _Routes(tmp_path, {"field.delim": ",", "escape.delim": "\\"}, cols)
    text = b"1\\,2,a\\,b\n3,x\n"
    rows, route = routes.read([text], _origins([text]))
    assert route == "lines"  # escapes: the general route only
    assert _brief(rows) == [(1, "k", "1\\,2")]
    assert rows[0]["raw_line"] == "1\\,2,a\\,b"


def test_origins_place_rows_in_their_files(tmp_path: Path) -> None:
    routes = _Routes(tmp_path)
    pieces = [GOOD + b"bad|a\n", GOOD * 3, b"\n" * 5 + b"also bad|b\n"]
    origins = [("file:///a", 3, 2), ("file:///b", 1, 3), ("file:///b", 4, 6)]
    rows, _ = routes.read(pieces, origins)
    assert [(r["source_file"], r["line"], r["value"]) for r in rows] == [
        ("file:///a", 4, "bad"), ("file:///b", 9, "also bad")]


# -- through the reader: lines of files ----------------------------------------------------------

def _groups_side(files: list[str], sd: StorageDescriptor, params: dict[str, str] | None = None,
                 **kw: Any) -> tuple[pa.Table, list[dict[str, Any]], int]:
    got: list[dict[str, Any]] = []
    count = [0]

    def side(group: int, rows: pa.Table, n: int) -> None:
        assert group == 0
        got.extend(rows.to_pylist())
        count[0] += n

    tables = [t for _, t in source.iter_source_groups(
        [files], sd, sd.columns, params or {}, unparseable="side-file", on_unparseable=side,
        **kw)]
    return pa.concat_tables(tables), got, count[0]


def _expected(path: Path, text: str, header: int, bad: str = "bad") -> list[tuple[str, int]]:
    """(file, line) of each line holding ``bad``, numbered as Hadoop's reader cuts lines."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [(path.as_uri(), n) for n, line in enumerate(lines, 1)
            if n > header and line.startswith(bad)]


def test_line_numbers_count_headers_crlf_and_empty_lines(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source, "batch_bytes_for", lambda limit: 1)  # a batch per piece
    cols = [Column(name="k", type="bigint"), Column(name="s", type="string")]
    sd = _sd({"field.delim": ","}, cols)
    files, want, rows = [], [], 0
    for f in range(3):
        parts = ["k,s\r\n", "h2\n"]  # two header lines
        for i in range(30000):  # 100s of KiB: several pieces per file
            if i % 7919 == f:
                parts.append(f"bad{i},x\r\n")
            elif i % 5000 == 1:
                parts.append("\r\n" if f else "\n")
            else:
                parts.append(f"{i},{'y' * (i % 13)}\n" if i % 3 else f"{i},z\r")
        text = ("\ufeff" if f == 1 else "") + "".join(parts)
        path = tmp_path / f"f{f}.txt"
        path.write_text(text, newline="")
        files.append(path.as_uri())
        want += _expected(path, text.lstrip("\ufeff"), 2)
        rows += len(text.replace("\r\n", "\n").replace("\r", "\n").split("\n")) - 3
    data, side, count = _groups_side(files, sd, {"skip.header.line.count": "2"})
    assert data.num_rows == rows
    assert [(r["source_file"], r["line"]) for r in side] == want
    assert count == len(want) == 12
    assert all(r["raw_line"] == f"{r['value']},x" for r in side)


def test_line_numbers_with_footer_and_compression(tmp_path: Path) -> None:
    cols = [Column(name="k", type="int")]
    sd = _sd({"field.delim": ","}, cols)
    text = "h\n1\nbad\n2\n\nbad2\nfooter-bad\n"
    gz, bz = tmp_path / "a.txt.gz", tmp_path / "b.txt.bz2"
    gz.write_bytes(gzip.compress(text.encode()))
    bz.write_bytes(bz2.compress(text.encode()))
    _, side, count = _groups_side([gz.as_uri(), bz.as_uri()], sd,
                                  {"skip.header.line.count": "1", "skip.footer.line.count": "1"})
    assert [(r["source_file"], r["line"], r["value"]) for r in side] == [
        (gz.as_uri(), 3, "bad"), (gz.as_uri(), 6, "bad2"),
        (bz.as_uri(), 3, "bad"), (bz.as_uri(), 6, "bad2")]
    assert count == 4


def test_other_encodings(tmp_path: Path) -> None:
    cols = [Column(name="s", type="string"), Column(name="k", type="int")]
    sd = _sd({"field.delim": ",", "serialization.encoding": "latin-1"}, cols)
    path = tmp_path / "l1.txt"
    path.write_bytes("h\né,1\nü,x\r\n".encode("latin-1"))
    _, side, _ = _groups_side([path.as_uri()], sd, {"skip.header.line.count": "1"})
    assert side == [{"source_file": path.as_uri(), "line": 3, "column": "k", "column_type": "int",
                     "value": "x", "raw_line": "ü,x"}]


def test_open_csv_columns_are_strings(tmp_path: Path) -> None:
    cols = [Column(name="k", type="int"), Column(name="d", type="date")]
    sd = _sd({"separatorChar": ","}, cols, OPEN_CSV_SERDE)
    path = tmp_path / "c.csv"
    path.write_text('x,"not a date"\n')
    data, side, _ = _groups_side([path.as_uri()], sd)
    assert data.to_pylist() == [{"k": "x", "d": "not a date"}] and side == []


def test_fail_names_file_line_column_and_value(tmp_path: Path) -> None:
    cols = [Column(name="k", type="int"), Column(name="when", type="date")]
    sd = _sd({"field.delim": "|"}, cols)
    good, bad = tmp_path / "a.txt", tmp_path / "b.txt"
    good.write_text("h\n1|2024-01-01\n")
    bad.write_text("h\n2|2024-01-02\n3|2024-01-03\n\n4|2024-99-01\nx|soon\n")
    with pytest.raises(InvalidInputError) as e:
        list(source.iter_source_groups([[good.as_uri(), bad.as_uri()]], sd, cols,
                                       {"skip.header.line.count": "1"}, unparseable="fail"))
    message = str(e.value)
    assert f"{bad.as_uri()}, line 5," in message  # the first one (the empty line is line 4)
    assert "'when'" in message and "'2024-99-01'" in message and "(date)" in message
    assert "unparseable=fail" in message
    # The default reads the same files silently, as Hive does.
    got = [t for _, t in source.iter_source_groups([[good.as_uri(), bad.as_uri()]], sd, cols,
                                                   {"skip.header.line.count": "1"})]
    assert pa.concat_tables(got).column("when").null_count == 3  # the empty line too


def test_fail_quotes_long_values_briefly(tmp_path: Path) -> None:
    cols = [Column(name="k", type="int")]
    path = tmp_path / "a.txt"
    path.write_text("9" * 5000 + "\n")
    with pytest.raises(InvalidInputError) as e:
        list(source.iter_source_groups([[path.as_uri()]], _sd({}, cols), cols, {},
                                       unparseable="fail"))
    assert len(str(e.value)) < 600 and "line 1" in str(e.value)


# -- the executor: side files next to the layout ------------------------------------------------

HEADER = "k|s|d|dt|x|b|ts|bin|v\n"
FILES = {
    "a.txt": HEADER + "3|cc|1.5|2024-01-03|10.25|true|2024-01-03 10:00:00|YWJj|abc\n"
                      "1|a|x1.5|2024-13-01|-3.10|yes|\\N|\\N|\\N\n",
    "b.txt": HEADER + "\n2|b| |2024-01-01|1|true|2024-01-01|YWJj|ab\n",
    "c.txt": HEADER + "4|\\N|0.0|2024-02-01|99.99|TRUE|2024-01-04 12:30:00|YWJj|a\n",
}
OUT = "/catalog/db/tables/t/_transformed/dt=1/3"
SIDE = "/catalog/db/tables/t/_transformed/dt=1/_unparseable-3"


@pytest.fixture
def ns(tmp_path: Path) -> Namespace:
    return Namespace(StateStore(tmp_path / "state"), root_ufs=(tmp_path / "cat").as_uri())


@pytest.fixture
def src(tmp_path: Path) -> dict[str, str]:
    return write_text_files(tmp_path / "src", FILES)


def _table() -> Table:
    return Table(db_name="db", name="t", sd=_sd(), parameters={"skip.header.line.count": "1"},
                 partition_keys=[Column(name="dt", type="string")])


def _run(ns: Namespace, groups: list[list[str]], text: str, out: str = OUT) -> Layout:
    plan = PartitionPlan(name="dt=1", location="file:///src", output_files=groups,
                         estimated_bytes=[100 * len(g) for g in groups])
    return execute_partition(plan, table=_table(),
                             partition=Partition(values=["1"], db_name="db", table_name="t",
                                                 sd=_sd()),
                             definition=parse_definition(text), fs=ns, output_dir=out,
                             version=3, source_fingerprint="fp")


def _local(ns: Namespace, path: str) -> Path:
    return Path(ns.resolve(path)[1].removeprefix("file://"))


def _served(ns: Namespace, layout: Layout) -> list[pa.Table]:
    d = Path(layout.location.removeprefix("file://"))
    return [pq.read_table(p) for p in sorted(d.iterdir())]


@pytest.mark.parametrize("extra", ["", "; sort.by=k"])
def test_side_file_serves_what_null_serves(ns: Namespace, src: dict[str, str],
                                           extra: str) -> None:
    groups = [[src["a.txt"], src["b.txt"]], [src["c.txt"]]]
    plain = _run(ns, groups, "file.size.min=1" + extra,
                 out="/catalog/db/tables/t/_transformed/dt=1/2")
    side = _run(ns, groups, "file.size.min=1; unparseable=side-file" + extra)
    assert [t.to_pylist() for t in _served(ns, side)] == [t.to_pylist() for t in _served(ns, plain)]
    assert [t.schema for t in _served(ns, side)] == [t.schema for t in _served(ns, plain)]
    assert side.model_copy(update={"location": plain.location}) == plain  # stats, counts...
    # Its side file: outside the served directory, only for the output file that has some.
    assert unparseable_dir(OUT) == SIDE
    side_dir = _local(ns, SIDE)
    assert sorted(p.name for p in side_dir.iterdir()) == ["part-0.parquet"]
    assert sorted(p.name for p in _local(ns, OUT).iterdir()) == ["part-0.parquet",
                                                                 "part-1.parquet"]
    rows = pq.read_table(side_dir / "part-0.parquet")
    assert rows.schema.equals(UNPARSEABLE_SCHEMA)
    assert [(r["source_file"], r["line"], r["column"], r["value"]) for r in rows.to_pylist()] == [
        (src["a.txt"], 3, "d", "x1.5"), (src["a.txt"], 3, "dt", "2024-13-01"),
        (src["a.txt"], 3, "b", "yes"), (src["b.txt"], 3, "d", " ")]
    assert rows.column("raw_line")[3].as_py() == "2|b| |2024-01-01|1|true|2024-01-01|YWJj|ab"
    assert unparseable_rows(ns, OUT) == 2  # two source rows


def test_no_side_file_without_unparseable_values(ns: Namespace, src: dict[str, str]) -> None:
    layout = _run(ns, [[src["c.txt"]]], "unparseable=side-file")
    assert layout.parameters["numRows"] == "1"
    assert not _local(ns, SIDE).exists()
    assert unparseable_rows(ns, OUT) == 0


def test_fail_fails_the_partition_and_leaves_nothing(ns: Namespace, src: dict[str, str]) -> None:
    _run(ns, [[src["c.txt"]]], "unparseable=fail")  # nothing unparseable: as null
    with pytest.raises(InvalidInputError) as e:
        _run(ns, [[src["c.txt"]], [src["b.txt"], src["a.txt"]]], "unparseable=fail")
    assert f"{src['b.txt']}, line 3, column 'd' (double): cannot parse ' '" in str(e.value)
    assert not _local(ns, OUT).exists() and not _local(ns, SIDE).exists()


def test_side_files_go_with_a_failure_and_an_earlier_attempts(ns: Namespace,
                                                               src: dict[str, str],
                                                               tmp_path: Path) -> None:
    stale = _local(ns, SIDE)
    stale.mkdir(parents=True)
    (stale / "part-7.parquet").write_bytes(b"stale")
    _run(ns, [[src["a.txt"]]], "unparseable=side-file")
    assert sorted(p.name for p in stale.iterdir()) == ["part-0.parquet"]
    broken = tmp_path / "src" / "broken.txt.snappy"
    broken.write_bytes(b"x")
    with pytest.raises(InvalidInputError):
        _run(ns, [[src["a.txt"]], [broken.as_uri()]], "unparseable=side-file")
    assert not _local(ns, OUT).exists() and not _local(ns, SIDE).exists()


def test_null_is_the_default_and_writes_no_side_file(ns: Namespace, src: dict[str, str]) -> None:
    assert TransformDefinition().unparseable == "null"
    _run(ns, [[src["a.txt"], src["b.txt"]]], "")
    assert not _local(ns, SIDE).exists()


# -- jobs: status and garbage -----------------------------------------------------------------

@pytest.fixture
def svc(tmp_path: Path) -> Iterator[CatalogService]:
    lake = tmp_path / "lake" / "m"
    lake.mkdir(parents=True)
    (lake / "a.csv").write_text("id,amount\n" + "".join(f"{i},{i / 4}\n" for i in range(50)))
    (lake / "b.csv").write_text("id,amount\n1,2.5\noops,3\n4,n/a\n")
    service = CatalogService(Settings(data_dir=tmp_path / "state", sync_interval_s=0,
                                      transform_jobs_kept=1))
    service.attach_database("directory", (tmp_path / "lake").as_uri(), "lake")
    service.transforms.start()
    yield service
    service.close()


def test_job_side_files_are_kept_with_their_job(svc: CatalogService) -> None:
    plain = svc.transforms.wait(svc.transforms.submit("lake", "m").id, 60)
    assert plain.state == "succeeded", plain.error
    served = pq.read_table(str(plain.partitions[0].location).removeprefix("file://")).to_pylist()
    job = svc.transforms.wait(svc.transforms.submit("lake", "m", "unparseable=side-file").id, 60)
    assert job.state == "succeeded", job.error
    assert "unparseable=side-file" in job.definition
    layout = svc.current_layouts("lake", "m")[""]
    assert pq.read_table(layout.location.removeprefix("file://")).to_pylist() == served
    out = f"/catalog/lake/tables/m/_transformed/{job.id}"
    assert unparseable_rows(svc.fs, out) == 2
    assert job.partitions[0].unparseable_rows == 2  # in the status (REST, --json)
    assert plain.partitions[0].unparseable_rows is None
    side = _local(svc.fs, unparseable_dir(out))
    rows = pq.read_table(side).to_pylist()
    assert [(r["line"], r["column"], r["value"]) for r in rows] == [
        (3, "id", "oops"), (4, "amount", "n/a")]
    # Kept while the job is (not an orphan), collected once it is pruned.
    assert svc.transforms.collect_garbage()["orphans"] == 0 and side.exists()
    failed = svc.transforms.wait(svc.transforms.submit("lake", "m", "unparseable=fail").id, 60)
    assert failed.state == "failed"
    assert "b.csv, line 3, column 'id'" in (failed.error or "")
    assert svc.store.job(job.id) is None  # pruned (transform_jobs_kept=1)
    later = time.time() + svc.settings.transform_gc_grace_s + 1
    svc.transforms.collect_garbage(now=later)
    assert not side.exists()
