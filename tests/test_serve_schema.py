"""Contract tests: schemathesis generates requests from the API's own OpenAPI schema (random paths, query
values, headers and multipart bodies) and checks every answer: never a 5xx, status codes, content types
and JSON bodies as documented. Bounded: a few examples per operation, no shrinking marathons."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

from test_serve import make_run  # noqa: E402

from visionlab.serve.app import create_app  # noqa: E402
from visionlab.serve.imaging import UploadLimits  # noqa: E402
from visionlab.serve.settings import ServeSettings  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    return make_run(tmp_path_factory.mktemp("schema") / "seg", "segment", "unet_mini", {"num_classes": 8})


@pytest.fixture(params=[None, "s3cret"], ids=["open", "api_key"])
def api_schema(run, request):
    limits = UploadLimits(max_bytes=100_000, max_pixels=250_000)
    app = create_app([str(run)], ServeSettings(api_key=request.param, limits=limits))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture
def ieee_floats():
    """Hypothesis refuses to generate floats while denormals are flushed to zero, a process-wide CPU mode
    that inference code (``configure_cpu``) switches on; switch it off for this test only."""
    import torch

    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(True)


def test_api_contract(api_schema, ieee_floats):
    """Every operation, a handful of generated requests each (schemathesis' pytest plugin is not used: it
    does not support this pytest version; driving its strategies with hypothesis is equivalent)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/health", "/ready", "/models", "/predict/{name}", "/metrics"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.generate], database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            response = case.call_and_validate()  # default checks: no 5xx, documented status/content/schema
            assert response.status_code < 500, (operation.path, response.status_code, response.text[:300])

        check()
