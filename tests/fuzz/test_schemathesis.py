"""Schemathesis against the live app (WSGI, on a real Redis): every operation of /openapi.json is fuzzed with
valid and invalid requests, authenticated past the door, and every answer must be no 5xx, a documented
status, a documented content type, documented headers and a body that matches its schema; an invalid
request must be refused with a 4xx.

Bounded and reproducible: FUZZ_EXAMPLES examples per operation and generation mode, derandomized (the same
examples on every run), no deadline. About 25 operations: a run takes well under a minute on 2 cores."""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN_KEY, Actions
from token_service import Settings, create_app

# TOKEN_SERVICE_FUZZ_EXAMPLES=500 (and HYPOTHESIS_PROFILE=explore for fresh examples) for a longer hunt.
FUZZ_EXAMPLES = int(os.environ.get("TOKEN_SERVICE_FUZZ_EXAMPLES", "30"))
EXPLORE = os.environ.get("HYPOTHESIS_PROFILE") == "explore"
# negative_data_rejection: a request the document calls invalid must get a 4xx (every bad input is refused).
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]
SIGNING_HEADERS = ("X-Key-Id", "X-Timestamp", "X-Signature")
examples: Counter[str] = Counter()  # requests per operation
successes: Counter[str] = Counter()  # 2xx answers per operation
# Operations on an id the fuzzer cannot guess (it draws random ids): 404 is all they can answer.
UNGUESSABLE = {"DELETE /v1/admin/revocations/{revocation_id}", "DELETE /v1/admin/api-keys/{key_id}",
               "POST /v1/admin/api-keys/{key_id}/rotate"}


class Fuzzed:
    """The app under fuzzing and the credentials that take a request past authentication."""

    def __init__(self, redis_url: str, signing_key_file: str):
        self.app = create_app(Settings(
            redis_url=redis_url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file,
            key_encryption_key=secrets.token_bytes(32), auth_adapters=("api_key", "hmac"), log_level="CRITICAL",
            # The fuzzer sends hundreds of admin calls and refusals a minute; the limits are tested in tests/api/.
            rate_limit_admin="100000/minute", rate_limit_failed_auth="100000/minute", rate_limit_secret_mint="100000/minute",
        ))
        actions = Actions(self.app.test_client())
        self.secret_key = actions.create_key("secret", personas=["*"], permissions=["introspect"])["key"]
        self.token = actions.token(self.secret_key)

    def credentials(self, path: str) -> str:
        if path == "/v1/tokens":
            return self.secret_key
        if path == "/v1/verify":
            return self.token
        return ADMIN_KEY


@pytest.fixture(scope="module")
def fuzzed(redis_server: Any, signing_key_file: str) -> Iterator[Fuzzed]:
    client = redis_server.client()
    client.flushall()
    client.close()
    yield Fuzzed(redis_server.url, signing_key_file)
    print(f"\nschemathesis: {sum(examples.values())} requests over {len(examples)} operations, {sum(successes.values())} answered 2xx")
    if examples:
        # The fuzzing went past authentication and validation: every operation but those on unguessable ids succeeded.
        assert {label for label in examples if successes[label] == 0} <= UNGUESSABLE, successes


@pytest.fixture(scope="module")
def api_schema(fuzzed: Fuzzed) -> Any:
    # Loaded from the app's own /openapi.json: the document fuzzed is the one served.
    loaded = schemathesis.openapi.from_wsgi("/openapi.json", fuzzed.app)
    loaded.config.generation.update(max_examples=FUZZ_EXAMPLES, deterministic=not EXPLORE, with_security_parameters=False)
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, derandomize=not EXPLORE, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: Any, fuzzed: Fuzzed) -> None:
    headers = {k: v for k, v in (case.headers or {}).items() if k not in SIGNING_HEADERS and k.lower() != "authorization"}
    headers["Authorization"] = f"Bearer {fuzzed.credentials(case.operation.path)}"
    case.headers = headers
    examples[case.operation.label] += 1
    response = case.call_and_validate(checks=CHECKS)
    if 200 <= response.status_code < 300:
        successes[case.operation.label] += 1
