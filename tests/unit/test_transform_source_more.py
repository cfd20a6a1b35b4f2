"""Source reading beyond text: ORC (by name, and by position for ``_col<N>`` files), complex
columns from Parquet/ORC through a whole transformation, and serde properties given as table
parameters (Hive merges them into the serde's properties)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.orc as po
import pyarrow.parquet as pq
import pytest

from catalog.exceptions import InvalidInputError
from catalog.fs.namespace import Namespace
from catalog.models import Column, SerDe, StorageDescriptor, Table
from catalog.store import StateStore
from catalog.transform.definition import TransformDefinition
from catalog.transform.executor import execute_partition
from catalog.transform.planner import PartitionPlan
from catalog.transform.source import (
    LAZY_SIMPLE_SERDE,
    OPEN_CSV_SERDE,
    ORC_SERDE,
    PARQUET_SERDE,
    read_source,
)

COMPLEX = [Column(name="id", type="bigint"), Column(name="tags", type="array<string>"),
           Column(name="attrs", type="map<string,int>"),
           Column(name="s", type="struct<x:bigint,y:string>")]


def test_orc_by_name_and_by_position(tmp_path: Path) -> None:
    po.write_table(pa.table({"_col0": [1, 2], "_col1": [["a"], ["b", "c"]],
                             "_col2": [[("k", 1)], []], "_col3": [{"x": 1, "y": "p"}, None]},
                            schema=pa.schema([("_col0", pa.int64()), ("_col1", pa.list_(pa.string())),
                                              ("_col2", pa.map_(pa.string(), pa.int32())),
                                              ("_col3", pa.struct([("x", pa.int64()),
                                                                   ("y", pa.string())]))])),
                   tmp_path / "old.orc")
    po.write_table(pa.table({"ID": [3], "tags": [["z"]]}), tmp_path / "new.orc")
    sd = StorageDescriptor(columns=COMPLEX, serde=SerDe(serialization_lib=ORC_SERDE))
    rows = read_source([str(tmp_path / "old.orc"), str(tmp_path / "new.orc")], sd, COMPLEX, {})
    assert rows.to_pylist() == [
        {"id": 1, "tags": ["a"], "attrs": [("k", 1)], "s": {"x": 1, "y": "p"}},
        {"id": 2, "tags": ["b", "c"], "attrs": [], "s": None},
        {"id": 3, "tags": ["z"], "attrs": None, "s": None}]  # by name, case-insensitively


def test_corrupt_orc_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.orc").write_bytes(b"ORC but not really")
    sd = StorageDescriptor(columns=COMPLEX[:1], serde=SerDe(serialization_lib=ORC_SERDE))
    with pytest.raises(InvalidInputError, match="bad.orc"):
        read_source([str(tmp_path / "bad.orc")], sd, COMPLEX[:1], {})


def test_complex_columns_survive_a_transformation(tmp_path: Path) -> None:
    data = pa.table({"id": [1, 2, 3], "tags": [["a", "b"], None, []],
                     "attrs": pa.array([[("k", 1)], [("m", 2), ("n", 3)], None],
                                       pa.map_(pa.string(), pa.int32())),
                     "s": [{"x": 1, "y": "u"}, {"x": 2, "y": None}, None]})
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(data, src / "f.parquet")
    ns = Namespace(StateStore(tmp_path / "state"), root_ufs=(tmp_path / "state" / "catalog").as_uri())
    table = Table(db_name="db", name="t", sd=StorageDescriptor(
        columns=COMPLEX, serde=SerDe(serialization_lib=PARQUET_SERDE)))
    plan = PartitionPlan("", str(src), [[str(src / "f.parquet")]], [1])
    layout = execute_partition(plan, table=table, partition=None,
                               definition=TransformDefinition(), fs=ns,
                               output_dir="/catalog/db/t/1", version=1, source_fingerprint=None)
    out = pq.read_table(layout.location.removeprefix("file://"))
    assert out.to_pylist() == data.to_pylist()
    assert {s.column for s in layout.column_stats} == {"id"}  # no stats kind for complex types


@pytest.mark.parametrize("serde, table_params, expected", [
    # Spark DDL drops NULL DEFINED AS: the table property is how the NULL format is set.
    (LAZY_SIMPLE_SERDE, {"serialization.null.format": ""},
     [{"id": 1, "s": None, "t": "x"}, {"id": 2, "s": "\\N", "t": None}]),
    (LAZY_SIMPLE_SERDE, {},
     [{"id": 1, "s": "", "t": "x"}, {"id": 2, "s": None, "t": ""}]),
    (OPEN_CSV_SERDE, {"separatorChar": ";"},
     [{"id": "1,,x", "s": None, "t": None}, {"id": "2,N,", "s": None, "t": None}]),  # \\ escapes
])
def test_table_parameters_override_serde_parameters(tmp_path: Path, serde: str,
                                                    table_params: dict[str, str],
                                                    expected: list[dict[str, object]]) -> None:
    f = tmp_path / "a.txt"
    f.write_text("1,,x\n2,\\N,\n")
    cols = [Column(name="id", type="int"), Column(name="s", type="string"),
            Column(name="t", type="string")]
    sd = StorageDescriptor(columns=cols, serde=SerDe(serialization_lib=serde,
                                                     parameters={"field.delim": ","}))
    assert read_source([str(f)], sd, cols, table_params).to_pylist() == expected
