"""A transformation job run by the Spark executor (``transform.executor=spark``, ``local[2]``)
through the job service: the same layouts and rows as the embedded executor's job."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from catalog.config import Settings
from catalog.service import CatalogService

pytestmark = pytest.mark.integration


def _lake(root: Path) -> Path:
    for region in ("east", "west"):
        d = root / "sales" / f"region={region}"
        d.mkdir(parents=True)
        for i in range(6):
            rows = "".join(f"{i * 100 + j},{j % 13}.25,2024-03-{1 + j % 28:02d}\n"
                           for j in range(100))
            (d / f"f{i}.csv").write_text("id,amount,day\n" + rows)
    return root


def _rows(location: str) -> list[tuple[object, ...]]:
    table = pq.read_table(location.removeprefix("file://"))
    return sorted(tuple(r.values()) for r in table.to_pylist())


def test_spark_job_matches_the_embedded_job(tmp_path: Path) -> None:
    lake = _lake(tmp_path / "lake")
    service = CatalogService(Settings(data_dir=tmp_path / "state", sync_interval_s=0))
    try:
        service.attach_database("directory", lake.as_uri(), "lake", name="embedded")
        service.attach_database("directory", lake.as_uri(), "lake", name="on_spark", options={
            "transform.executor": "spark", "spark.master": "local[2]",
            "spark.ui.enabled": "false"})
        service.transforms.start()
        results = {}
        for db in ("embedded", "on_spark"):
            job = service.transforms.submit(db, "sales", "file.size.min=2KB")
            done = service.transforms.wait(job.id, 300)
            assert done.state == "succeeded", done.error
            assert done.executor == ("spark" if db == "on_spark" else "duckdb")
            results[db] = service.current_layouts(db, "sales")
        for name, lay in results["embedded"].items():
            other = results["on_spark"][name]
            assert other.parameters == lay.parameters
            assert other.column_stats == lay.column_stats
            assert int(lay.parameters["numFiles"]) >= 2
            assert _rows(other.location) == _rows(lay.location)
            assert len(_rows(lay.location)) == 600
    finally:
        service.close()
