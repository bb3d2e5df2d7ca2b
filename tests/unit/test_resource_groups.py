"""Resource groups: LIQI_RESOURCE_GROUPS and LIQI_RESOURCE_GROUP parsed, a job's group chosen
and checked at submit (liqi.control.jobs.catalog.choose_group)."""

from __future__ import annotations

import pytest

from liqi.config import load_server_settings
from liqi.control.identity.accounts import Principal
from liqi.control.jobs.catalog import choose_group
from liqi.core.jobs import ClusterShape, JobSpec
from liqi.core.pai_command import parse_pai
from liqi.errors import ConfigError, InvalidRequestError, PermissionDeniedError
from liqi.resource_groups import LOCAL_GROUP, ResourceGroup, parse_resource_groups, probe

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
    assert choose_group(spec(), GROUPS, "ray", ADMIN, sandboxed=False) == RAY
    assert choose_group(spec(), GROUPS, "local", USER, sandboxed=True) == LOCAL_GROUP
    assert choose_group(spec("local"), GROUPS, "ray", USER, sandboxed=True) == LOCAL_GROUP


def test_an_unknown_group_is_refused_naming_the_groups() -> None:
    with pytest.raises(InvalidRequestError) as info:
        choose_group(spec("gpu"), GROUPS, "local", ADMIN, sandboxed=False)
    assert "Resource group 'gpu' does not exist. Resource groups: local, ray" in str(info.value)


def test_a_cluster_job_runs_in_a_ray_group_as_in_local() -> None:
    shape = ClusterShape(ps=1, workers=2)
    ray_group = choose_group(spec("ray", shape), GROUPS, "local", ADMIN, sandboxed=False)
    assert ray_group.name == "ray"
    assert choose_group(spec("local", shape), GROUPS, "ray", ADMIN, sandboxed=False) == LOCAL_GROUP


def test_a_sandboxed_server_lets_only_superusers_use_a_ray_group() -> None:
    with pytest.raises(PermissionDeniedError) as info:
        choose_group(spec("ray"), GROUPS, "local", USER, sandboxed=True)
    assert "without liqi's sandbox" in str(info.value)
    assert choose_group(spec("ray"), GROUPS, "local", ADMIN, sandboxed=True) == RAY
    assert choose_group(spec("ray"), GROUPS, "local", USER, sandboxed=False) == RAY


def test_health_of_local_is_ok_and_of_an_unreachable_head_the_error() -> None:
    assert probe(LOCAL_GROUP) == "ok"
    dead = ResourceGroup("ray", "ray", "http://127.0.0.1:9")  # discard port: nothing listens
    assert probe(dead, timeout_s=0.5).startswith("cannot reach http://127.0.0.1:9/api/version: ")
