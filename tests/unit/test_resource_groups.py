"""Resource groups: LIQI_RESOURCE_GROUPS and LIQI_RESOURCE_GROUP parsed, a job's group chosen
and checked at submit (liqi.control.jobs.catalog.choose_group)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from liqi.config import load_server_settings
from liqi.control.identity.accounts import Principal
from liqi.control.jobs.catalog import choose_group
from liqi.core.jobs import ClusterShape, JobSpec
from liqi.core.pai_command import parse_pai
from liqi.errors import (
    ConfigError,
    InvalidRequestError,
    PermissionDeniedError,
    ResourceGroupUnavailableError,
)
from liqi.resource_groups import (
    LOCAL_GROUP,
    GroupHealth,
    Placement,
    ResourceGroup,
    parse_resource_groups,
    probe,
)
from tests.support.waiting import wait_until

RAY = ResourceGroup("ray", "ray", "http://127.0.0.1:8265")
GPU = ResourceGroup("gpu-a_1", "ray", "https://10.0.0.5:8265")
ADMIN = Principal(key_id=1, access_id="AKIDadmin", is_superuser=True, roles={})
USER = Principal(key_id=2, access_id="AKIDuser", is_superuser=False, roles={})


def test_local_always_exists() -> None:
    assert parse_resource_groups("") == (LOCAL_GROUP,)
    settings = load_server_settings({})
    assert settings.resource_groups == (LOCAL_GROUP,)
    assert settings.resource_group == "local"


def test_groups_are_parsed_in_order() -> None:
    text = " ray=ray:http://127.0.0.1:8265/ , gpu-a_1=ray:https://10.0.0.5:8265,"
    assert parse_resource_groups(text) == (LOCAL_GROUP, RAY, GPU)


def test_the_default_group_comes_from_the_environment() -> None:
    environ = {
        "LIQI_RESOURCE_GROUPS": "ray=ray:http://127.0.0.1:8265",
        "LIQI_RESOURCE_GROUP": "ray",
    }
    settings = load_server_settings(environ)
    assert settings.resource_groups == (LOCAL_GROUP, RAY)
    assert settings.resource_group == "ray"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ray", "'ray' is not name=backend:address"),
        ("ray=http://127.0.0.1:8265", "names the backend 'http'"),
        ("ray=ray", "'ray=ray' is not name=backend:address"),
        ("Ray=ray:http://127.0.0.1:8265", "'Ray' is not a group name"),
        ("a-very-long-group-name=ray:http://h:1", "is not a group name"),
        ("=ray:http://127.0.0.1:8265", "'' is not a group name"),
        ("k8s=kube:http://127.0.0.1:8265", "names the backend 'kube'"),
        ("ray=ray:127.0.0.1:8265", "is not an http(s) address"),
        ("ray=ray:http://", "is not an http(s) address"),
        ("local=ray:http://127.0.0.1:8265", "group 'local' is given twice"),
        ("a=ray:http://h:1,a=ray:http://h:2", "group 'a' is given twice"),
    ],
)
def test_a_malformed_entry_is_refused_with_an_example(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_server_settings({"LIQI_RESOURCE_GROUPS": text})
    message = str(info.value)
    assert message.startswith(f"LIQI_RESOURCE_GROUPS={text!r}: ")
    assert problem in message
    assert "ray=ray:http://127.0.0.1:8265,gpu=ray:http://10.0.0.5:8265" in message


def test_an_unknown_default_group_is_refused_naming_the_groups() -> None:
    with pytest.raises(ConfigError) as info:
        load_server_settings({"LIQI_RESOURCE_GROUP": "ray"})
    message = str(info.value)
    assert "LIQI_RESOURCE_GROUP='ray' is not a resource group; the groups are local." in message
    assert "LIQI_RESOURCE_GROUPS='ray=ray:http://127.0.0.1:8265'" in message


def test_the_pai_flag_names_the_group() -> None:
    words = ["pai", "-name", "tensorflow", "-Dscript=train.py", "-DresourceGroup=ray"]
    assert parse_pai(words).resource_group == "ray"
    assert parse_pai(words[:-1]).resource_group is None


def spec(group: str | None = None, cluster: ClusterShape | None = None) -> JobSpec:
    return JobSpec(
        name="j", project="p", script="oss://b/s.py", resource_group=group, cluster=cluster
    )


GROUPS = (LOCAL_GROUP, RAY)


def test_a_job_without_a_group_gets_the_servers_default() -> None:
    assert choose_group(spec(), Placement(GROUPS, "ray", False), ADMIN) == RAY
    assert choose_group(spec(), Placement(GROUPS, "local", True), USER) == LOCAL_GROUP
    assert choose_group(spec("local"), Placement(GROUPS, "ray", True), USER) == LOCAL_GROUP


def test_an_unknown_group_is_refused_naming_the_groups() -> None:
    with pytest.raises(InvalidRequestError) as info:
        choose_group(spec("gpu"), Placement(GROUPS, "local", False), ADMIN)
    assert "Resource group 'gpu' does not exist. Resource groups: local, ray" in str(info.value)


def test_a_cluster_job_runs_in_a_ray_group_as_in_local() -> None:
    shape = ClusterShape(ps=1, workers=2)
    ray_group = choose_group(spec("ray", shape), Placement(GROUPS, "local", False), ADMIN)
    assert ray_group.name == "ray"
    assert choose_group(spec("local", shape), Placement(GROUPS, "ray", False), ADMIN) == LOCAL_GROUP


def test_a_sandboxed_server_lets_only_superusers_use_a_ray_group() -> None:
    with pytest.raises(PermissionDeniedError) as info:
        choose_group(spec("ray"), Placement(GROUPS, "local", True), USER)
    assert "without liqi's sandbox" in str(info.value)
    assert choose_group(spec("ray"), Placement(GROUPS, "local", True), ADMIN) == RAY
    assert choose_group(spec("ray"), Placement(GROUPS, "local", False), USER) == RAY


def test_health_of_local_is_ok_and_of_an_unreachable_head_the_error() -> None:
    assert probe(LOCAL_GROUP) == "ok"
    dead = ResourceGroup("ray", "ray", "http://127.0.0.1:9")  # discard port: nothing listens
    assert probe(dead, timeout_s=0.5).startswith("cannot reach http://127.0.0.1:9/api/version: ")


class Answers:
    """A probe whose answer the test sets; counts how often it was asked."""

    def __init__(self) -> None:
        self.answer = "ok"
        self.asked: list[tuple[str, float]] = []

    def __call__(self, group: ResourceGroup, timeout_s: float) -> str:
        self.asked.append((group.name, timeout_s))
        return self.answer


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_group_health_remembers_ok_for_seconds_and_a_failure_briefly() -> None:
    answers, clock = Answers(), Ticks()
    health = GroupHealth(timeout_s=0.5, ok_ttl_s=5.0, failed_ttl_s=1.0, probe=answers, clock=clock)
    assert health.check(LOCAL_GROUP) == "ok"
    assert answers.asked == []  # local is never probed
    assert [health.check(RAY) for _ in range(10)] == ["ok"] * 10
    assert answers.asked == [("ray", 0.5)]  # a burst of submissions: one probe
    answers.answer = "cannot reach http://127.0.0.1:8265/api/version: refused"
    clock.now += 4.9
    assert health.check(RAY) == "ok"  # still the good answer
    clock.now += 0.2
    assert health.check(RAY) == answers.answer  # ok expired: probed again, and it failed
    assert health.check(RAY) == answers.answer
    assert len(answers.asked) == 2
    answers.answer = "ok"  # the head is started again
    clock.now += 1.0
    assert health.check(RAY) == "ok"  # a failure is remembered for failed_ttl_s only
    assert len(answers.asked) == 3
    health.check(GPU)
    assert answers.asked[-1] == ("gpu-a_1", 0.5)  # each group its own answer


def test_group_health_require_names_the_group_its_address_and_what_to_do() -> None:
    answers = Answers()
    health = GroupHealth(probe=answers, clock=Ticks())
    health.require(RAY, (LOCAL_GROUP, RAY, GPU))
    answers.answer = "cannot reach http://10.0.0.5:8265/api/version: timed out"
    with pytest.raises(ResourceGroupUnavailableError) as info:
        health.require(GPU, (LOCAL_GROUP, RAY, GPU))
    assert str(info.value) == (
        "Resource group 'gpu-a_1' (ray at https://10.0.0.5:8265) cannot take jobs: cannot reach "
        "http://10.0.0.5:8265/api/version: timed out. Nothing was created. Start its Ray head "
        "with its dashboard at https://10.0.0.5:8265 (ray start --head --include-dashboard=true), "
        "or use another group with -DresourceGroup=NAME (liqi pai) or "
        "--resource-group NAME (liqi job submit); other groups: local, ray."
    )
    assert info.value.http_status == 503
    assert info.value.details == {"resource_group": "gpu-a_1", "address": "https://10.0.0.5:8265"}


def test_group_health_probes_once_for_callers_at_the_same_time() -> None:
    release = threading.Event()
    answers = Answers()

    def slow_probe(group: ResourceGroup, timeout_s: float) -> str:
        assert release.wait(timeout=10)
        return answers(group, timeout_s)

    health = GroupHealth(probe=slow_probe, clock=Ticks())
    calling: list[int] = []

    def check() -> str:
        calling.append(1)
        return health.check(RAY)

    with ThreadPoolExecutor(max_workers=5) as pool:
        futures = [pool.submit(check) for _ in range(5)]
        wait_until(lambda: len(calling) == 5, "5 callers in GroupHealth.check", timeout_s=10)
        release.set()
        assert [f.result(timeout=10) for f in futures] == ["ok"] * 5
    assert len(answers.asked) == 1  # the others waited for the first one's answer
