"""A schemathesis hooks module (SCHEMATHESIS_HOOKS) for tests/server/test_schemathesis.py.

It registers one check, `positive_data_accepted_unless_too_big`: schemathesis's own
positive_data_acceptance, with exactly two exemptions that a JSON schema cannot express because
they relate two fields or a field and the server's load: a 400 whose error code is
`context_length_exceeded` (the prompt's tokens plus max_tokens exceed max_model_len) or
`request_too_large` (prompts x n exceed the admission window). Any other rejection of
schema-valid data still fails."""

from __future__ import annotations

import json

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance

CROSS_FIELD_CODES = {"context_length_exceeded", "request_too_large"}


@schemathesis.check
def positive_data_accepted_unless_too_big(ctx, response, case):
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if response.status_code == 400:
            try:
                code = json.loads(response.content)["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = None
            if code in CROSS_FIELD_CODES:
                return None
        raise
