"""Property-based tests generated from the served OpenAPI document (schemathesis).

Every operation gets bodies that follow the schema (positive) and, where there is a body, bodies
that break it (negative). Whatever arrives, the service must answer without a 5xx, within the
request timeout (no hung connection), with a documented status, content type and body shape, and
must reject what the schema forbids. Examples are few and shrinking is off, to stay at seconds.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.integration.service_support import Service

EXAMPLES = 25
# A hung connection fails the call instead of blocking the suite.
REQUEST_TIMEOUT = 15.0
# The schema cannot say everything the service checks ("the last message is the user's", "the
# model is one this deployment serves", "the query is not only spaces"), so schema-valid bodies
# may still be refused with a 400: that is not a failure, a 5xx or an undocumented answer is.
EXCLUDED = [positive_data_acceptance]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_breaks_the_service(
    kimi_api_service: Service, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(
        f"{kimi_api_service.url}/openapi.json", timeout=REQUEST_TIMEOUT
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    if mode is GenerationMode.NEGATIVE:
        operations = [op for op in operations if op.method.upper() == "POST"]
    assert {op.path for op in operations} >= {"/api/ai/query", "/v1/chat/completions"}

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=kimi_api_service.url, timeout=REQUEST_TIMEOUT)
            case.validate_response(response, excluded_checks=EXCLUDED)

        check()

    with kimi_api_service.client() as client:
        assert client.get("/healthz").status_code == 200
