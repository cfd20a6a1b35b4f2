"""Schemathesis over the REST API's own OpenAPI schema (ASGI transport, no network).

Every operation gets generated requests (valid and invalid), with the token, against a catalog
with one attached database and one mount; all of schemathesis' checks run (no 5xx, answers that
match the schema: status codes, content types, bodies, headers, ``Allow`` on 405, invalid data
rejected). Examples are bounded per operation so that the test stays fast.

One allowance: a schema-valid request may still be refused by the catalog's own rules, which no
schema states (an unknown UDB type, a filter that does not parse, a URI no connector takes), with
422 and the error body; ``positive_data_acceptance`` is told so (422 expected too).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from api.rest.app import create_app  # noqa: E402
from catalog.config import Settings  # noqa: E402
from catalog.service import CatalogService  # noqa: E402
from tests.support.fake_udb import sample_source  # noqa: E402

pytestmark = pytest.mark.integration

TOKEN = "schemathesis-token-0123456789"
_STATE: dict[str, CatalogService] = {}


def _app() -> object:
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="strata-st-"))
    source = sample_source()
    service = CatalogService(Settings(data_dir=root / "state", sync_interval_s=0,
                                      allowed_roots=[str(root / "lake")]),
                             udb_factory=source.factory)
    (root / "lake" / "t").mkdir(parents=True)
    (root / "lake" / "t" / "a.csv").write_text("id\n1\n")
    service.attach_database("hive", "thrift://h:9083", "sales")
    service.mount("/lake", str(root / "lake"))
    _STATE["service"] = service
    return create_app(service, token=TOKEN)


CONFIG = schemathesis.config.SchemathesisConfig.from_str("""
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422"]
""")
schema = schemathesis.openapi.from_asgi("/openapi.json", _app(), config=CONFIG)


@pytest.fixture(scope="module", autouse=True)
def _close() -> Iterator[None]:
    yield
    _STATE["service"].close()


@schema.parametrize()
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
