"""schemathesis against /openapi.json: generated requests (valid and not) never get a 5xx, and
every response matches the documented status codes and schemas."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

EXAMPLES_PER_OPERATION = 25


def test_openapi_contract(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health"}
    checks = [not_a_server_error, status_code_conformance, response_schema_conformance]
    for op in operations:
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def contract(case):
            case.call_and_validate(base_url=server.url, headers=server.headers, timeout=60, checks=checks)

        contract()
