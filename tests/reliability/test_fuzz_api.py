"""The control plane's HTTP API fuzzed from its own OpenAPI document (schemathesis): every
route, signed as a project member and as the superuser. Well-formed requests never get a
server error; requests that break the schema are refused with a 4xx.

Each request is signed with liqi's own HMAC signature by a ``requests`` auth hook, so the
fuzzed values reach the handlers rather than stopping at the authentication middleware (the
tests check that no /api request is refused as unauthenticated). Examples are few per
operation, derandomized (the same inputs on every run) and not shrunk."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import requests
import schemathesis
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import negative_data_rejection

from liqi.cli.main import cli
from liqi.core import signing
from liqi.errors import InvalidRequestError
from tests.support.servers import LiveServer, live_server

pytestmark = pytest.mark.timeout(300)

PROJECT = "fuzz"
BUCKET = "fuzz-bucket"
EXAMPLES = 5  # per operation, mode and pass: ~550 requests per role

# Routes whose positive examples would start real work (a job's processes, a service's model
# servers) if a generated body happened to be valid; their negative examples are cheap and run.
STARTS_WORK = {"POST /api/v1/jobs", "POST /api/v1/services"}


class Signed(requests.auth.AuthBase):
    """Signs each prepared request as liqi's clients do (liqi.client.auth.SigningAuth)."""

    def __init__(self, access_id: str, secret: str) -> None:
        self.access_id = access_id
        self.secret = secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        url = urlsplit(request.url or "")
        body = request.body or b""
        headers = signing.sign(
            access_id=self.access_id,
            secret=self.secret,
            method=request.method or "GET",
            path=url.path,
            raw_query=url.query,
            body=body.encode() if isinstance(body, str) else body,
            now=datetime.now(timezone.utc),
        )
        request.headers.update(headers.as_dict())
        return request


@dataclass
class Tally:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    unauthenticated: list[str] = field(default_factory=list)
    operations: int = 0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


@dataclass
class Fuzzed:
    live: LiveServer
    schema: Any
    signers: dict[str, Signed]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """One control plane for the module; project ``fuzz`` with a bucket, a member key."""
    with live_server(tmp_path_factory.mktemp("fuzz") / "home", None) as live:
        with live.admin() as admin:
            admin.create_project(PROJECT)
            admin.create_bucket(BUCKET, project=PROJECT)
            member = admin.create_key(project=PROJECT, role="member", name="fuzzer")
        assert member.secret
        profile = live.admin_profile().profiles["default"]
        assert profile.access_id
        assert profile.access_key
        signers = {
            "member": Signed(member.access_id, member.secret),
            "superuser": Signed(profile.access_id, profile.access_key),
        }
        schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
        yield Fuzzed(live=live, schema=schema, signers=signers)


def negatable(definition: dict[str, Any]) -> bool:
    """Whether the operation's schema can be broken at all: a body, a typed (non-string)
    parameter or a required query parameter. A route whose only inputs are free strings in
    its path accepts every value, so no request to it violates its schema."""
    for parameter in definition.get("parameters", []):
        if parameter["schema"].get("type") in ("integer", "number", "boolean"):
            return True
        if parameter["in"] == "query" and parameter.get("required"):
            return True
    return "requestBody" in definition


def seeded(definition: dict[str, Any]) -> dict[str, str]:
    """Path parameters pinned to things that exist, so that fuzzed values reach past the
    lookups: the project and its bucket."""
    names = {p["name"] for p in definition.get("parameters", []) if p["in"] == "path"}
    known = {"project": PROJECT, "bucket": BUCKET}
    return {name: value for name, value in known.items() if name in names}


def fuzz(fuzzed: Fuzzed, role: str, mode: GenerationMode) -> Tally:
    tally = Tally()
    with requests.Session() as session:
        session.auth = fuzzed.signers[role]
        fuzz_with(fuzzed, session, mode, tally)
    return tally


def fuzz_with(
    fuzzed: Fuzzed, session: requests.Session, mode: GenerationMode, tally: Tally
) -> None:
    checks = [not_a_server_error, negative_data_rejection]
    for result in fuzzed.schema.get_all_operations():
        operation = result.ok()
        definition = operation.definition.raw
        if mode is GenerationMode.NEGATIVE and not negatable(definition):
            continue
        if mode is GenerationMode.POSITIVE and operation.label in STARTS_WORK:
            continue
        tally.operations += 1
        passes: list[dict[str, str]] = [{}]  # random path parameters
        if mode is GenerationMode.POSITIVE and seeded(definition):
            passes.append(seeded(definition))
        for path_parameters in passes:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: Any) -> None:
                response = case.call(session=session, timeout=30)
                tally.statuses[response.status_code] += 1
                if response.status_code == 401 and case.path.startswith("/api/"):
                    tally.unauthenticated.append(f"{case.operation.label}: {response.text[:200]}")
                try:
                    case.validate_response(response, checks=checks)
                except (Failure, FailureGroup) as exc:
                    tally.failures.append(f"{case.operation.label} [{mode.value}]: {exc}")

            run()


def report(tally: Tally) -> str:
    shown = "\n\n".join(tally.failures[:10])
    return f"{len(tally.failures)} failures in {tally.requests} requests:\n{shown}"


@pytest.mark.parametrize("role", ["member", "superuser"])
def test_well_formed_requests_to_every_route_never_get_a_server_error(
    fuzzed: Fuzzed, role: str
) -> None:
    tally = fuzz(fuzzed, role, GenerationMode.POSITIVE)
    print(f"{role} positive: {tally.operations} operations, {tally.requests} requests")
    print(f"  statuses: {dict(tally.statuses)}")
    assert tally.operations >= 60, "the OpenAPI document lost its routes"
    assert tally.requests >= tally.operations * EXAMPLES // 2
    assert not tally.unauthenticated, tally.unauthenticated[:5]
    assert not tally.failures, report(tally)
    assert all(status < 500 for status in tally.statuses)
    assert tally.statuses[200] > 0  # the signature holds: some requests were served


@pytest.mark.parametrize("role", ["member", "superuser"])
def test_requests_that_break_the_schema_are_refused_with_a_4xx(fuzzed: Fuzzed, role: str) -> None:
    tally = fuzz(fuzzed, role, GenerationMode.NEGATIVE)
    print(f"{role} negative: {tally.operations} operations, {tally.requests} requests")
    print(f"  statuses: {dict(tally.statuses)}")
    assert tally.operations >= 25
    assert tally.requests >= tally.operations * EXAMPLES // 2
    assert not tally.unauthenticated, tally.unauthenticated[:5]
    assert not tally.failures, report(tally)
    assert all(status < 500 for status in tally.statuses)


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_presigned_url_with_a_non_ascii_signature_is_refused_with_401(
    fuzzed: Fuzzed, method: str
) -> None:
    # found by the fuzzer: hmac.compare_digest raised TypeError (a 500) on a non-ASCII str
    url = f"{fuzzed.live.url}/presigned/{BUCKET}/a.txt?expires=99999999999&signature=%C3%8D"
    response = httpx.request(method, url, content=b"x", trust_env=False, timeout=10)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "unauthenticated"


@pytest.mark.parametrize("model_path", ["http://[x/m.tar.gz", "http://a]b/m", "oss://[/m"])
def test_a_service_whose_model_url_has_an_unbalanced_bracket_is_refused_with_400(
    fuzzed: Fuzzed, model_path: str
) -> None:
    # urlsplit raised ValueError ("Invalid IPv6 URL") in the fetch policy: a 500
    spec = {"name": "bracket", "model_path": model_path, "processor": "tensorflow_cpu"}
    with fuzzed.live.admin() as admin:
        with pytest.raises(InvalidRequestError, match="Invalid IPv6 URL") as refused:
            admin.create_service(spec, project=PROJECT)
        assert refused.value.http_status == 400
        assert [s.name for s in admin.list_services(project=PROJECT)] == []


def test_liqi_pai_with_an_unbalanced_bracket_in_its_oss_script_says_why_it_refuses(
    fuzzed: Fuzzed,
) -> None:
    # the CLI's urlsplit raised ValueError: "internal error" instead of the reason
    words = ["pai", "-name", "tensorflow", "-Dscript=oss://[x/a.py"]
    result = CliRunner().invoke(cli, words, env=fuzzed.live.environ)
    assert result.exit_code == 2, result.output
    assert "is not an oss:// URI (Invalid IPv6 URL)" in result.output
    assert "internal error" not in result.output
