"""Property-based tests of every OpenAPI document with Schemathesis: the gateway through nginx
(with a valid API key), each internal service directly (with the internal token). No generated
request, valid or invalid, may get a 5xx, and every response must match the status codes, content
types and bodies its operation declares.

Bounded so `make test` stays quick: MAX_EXAMPLES valid and MAX_EXAMPLES invalid requests per
operation, no shrinking, no example database, derandomized (the same requests every run).

Schemathesis's own pytest integration (`schemathesis.pytest.from_fixture`) does not run under
pytest 9 (it writes `Function._nodeid`), so each operation is driven through Hypothesis here.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from infergate_devstack.stack import Stack
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction
from schemathesis.core.result import Ok
from schemathesis.generation.case import Case as GenericCase
from schemathesis.schemas import APIOperation, BaseSchema

from tests.fake_ollama_fixtures import FakeOllamaControl

Operation = APIOperation[Any, Any, Any, Any]
Case = GenericCase[Operation]

MAX_EXAMPLES = 30
SERVED_MODEL = "llama3"  # the test stack's MODEL, which the fake LLM has
REQUEST_TIMEOUT_S = 10.0

CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    phases=[Phase.explicit, Phase.generate],
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)

CaseCall = Callable[[Case], None]


def load_schema(url: str) -> BaseSchema:
    config = schemathesis.Config.from_dict({"request-timeout": REQUEST_TIMEOUT_S})
    return schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)


def operations(schema: BaseSchema) -> list[Operation]:
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results
    return [result.ok() for result in results if isinstance(result, Ok)]


def fuzz_operation(
    operation: Operation, mode: GenerationMode, call: CaseCall, ran: Counter[str]
) -> None:
    """Send up to MAX_EXAMPLES generated requests of one kind, counted in `ran`."""

    @SETTINGS
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        ran[mode.value] += 1
        call(case)

    run()


def fuzz(schema: BaseSchema, call: CaseCall) -> tuple[Counter[str], list[str]]:
    """Every operation, valid then invalid requests: (examples run per mode, failures)."""
    ran: Counter[str] = Counter()
    failures = []
    for operation in operations(schema):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz_operation(operation, mode, call, ran)
            except hypothesis.errors.Unsatisfiable:
                continue  # nothing to make invalid (an operation without parameters)
            except (AssertionError, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    # Shown with -s, and in the report of a failing run.
    print(f"schemathesis {schema.location}: {dict(ran)} examples, {len(failures)} failures")
    return ran, failures


def steer_to_a_served_model(case: Case, served: Counter[str]) -> None:
    """Every other valid request that names a model names one the gateway serves: random names
    only ever get the allow-list's 404, and the success path deserves as many examples."""
    body = case.body
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        served[case.operation.label] += 1
        if served[case.operation.label] % 2:
            body["model"] = SERVED_MODEL


@pytest.fixture
def default_llm(fake_ollama_control: FakeOllamaControl) -> FakeOllamaControl:
    """The fake LLM in its default, instant behaviour (reset around each test)."""
    return fake_ollama_control


@pytest.fixture
def issue_key(stack: Stack) -> Iterator[Callable[[], str]]:
    """Issues fresh API keys, so generated chats never run out of quota."""
    with httpx.Client(base_url=stack.public_url, timeout=REQUEST_TIMEOUT_S) as client:

        def issue() -> str:
            email = f"fuzz-{uuid.uuid4().hex}@example.com"
            response = client.post("/v1/register", json={"email": email})
            assert response.status_code == 201, response.text
            key: str = response.json()["apiKey"]
            return key

        yield issue


def test_the_gateway_through_nginx_conforms_to_its_openapi(
    stack: Stack, issue_key: Callable[[], str], default_llm: FakeOllamaControl
) -> None:
    served = Counter[str]()

    def call(case: Case) -> None:
        headers = {"x-api-key": issue_key()}
        steer_to_a_served_model(case, served)
        case.call_and_validate(base_url=stack.public_url, headers=headers, checks=CHECKS)

    ran, failures = fuzz(load_schema(stack.public_url), call)
    assert failures == [], "\n\n".join(failures)
    assert ran.total() > 100


@pytest.mark.parametrize("service", ["auth", "usage", "ai"])
def test_an_internal_service_conforms_to_its_openapi(
    stack: Stack, service: str, default_llm: FakeOllamaControl
) -> None:
    url = stack.service_url(service)
    checks = CHECKS

    def call(case: Case) -> None:
        headers = {"x-internal-token": stack.internal_token}
        case.call_and_validate(base_url=url, headers=headers, checks=checks)

    ran, failures = fuzz(load_schema(url), call)
    assert failures == [], "\n\n".join(failures)
    assert ran.total() > 50
