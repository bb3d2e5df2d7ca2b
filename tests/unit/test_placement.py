"""Placement: the resource group a workload runs in (its own, its project's, the server's)
and who may use a Ray group on a sandboxed server; LIQI_PROJECT_RESOURCE_GROUPS parsed."""

from __future__ import annotations

import pytest

from liqi.config import load_server_settings
from liqi.errors import ConfigError, InvalidRequestError, PermissionDeniedError
from liqi.resource_groups import LOCAL_GROUP, Placement, ResourceGroup, parse_project_groups

RAY = ResourceGroup("ray", "ray", "http://127.0.0.1:8265")
GROUPS = (LOCAL_GROUP, RAY)


def test_the_workloads_own_group_then_its_projects_then_the_servers() -> None:
    placement = Placement(GROUPS, "local", projects=(("vision", "ray"),))
    choose = placement.choose
    assert choose(None, project="other", superuser=False, flag="f") is LOCAL_GROUP
    assert choose(None, project="vision", superuser=False, flag="f") is RAY
    assert choose("local", project="vision", superuser=False, flag="f") is LOCAL_GROUP
    assert choose("ray", project="other", superuser=False, flag="f") is RAY
    assert placement.default_of("vision") == "ray"
    assert placement.default_of("other") == "local"


def test_an_unknown_group_is_refused_naming_the_flag_and_the_groups() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        Placement(GROUPS).choose("eas-r-abc", project="p", superuser=True, flag="metadata.resource")
    assert "'eas-r-abc' does not exist" in caught.value.message
    assert "name one with metadata.resource" in caught.value.message
    assert "local, ray" in caught.value.message


def test_a_sandboxed_server_gives_a_ray_group_to_superusers_and_its_projects() -> None:
    placement = Placement(GROUPS, "local", sandboxed=True, projects=(("vision", "ray"),))
    assert placement.choose("ray", project="p", superuser=True, flag="f") is RAY
    assert placement.choose(None, project="vision", superuser=False, flag="f") is RAY
    with pytest.raises(PermissionDeniedError) as caught:
        placement.choose("ray", project="p", superuser=False, flag="f")
    assert "LIQI_PROJECT_RESOURCE_GROUPS" in caught.value.message
    # Without the sandbox nothing is withheld (user code runs as the server anyway).
    assert Placement(GROUPS).choose("ray", project="p", superuser=False, flag="f") is RAY


def test_project_groups_are_parsed_and_checked() -> None:
    assert parse_project_groups(" b=ray, a=local ,", GROUPS) == (("a", "local"), ("b", "ray"))
    assert parse_project_groups("", GROUPS) == ()
    for text, problem in [
        ("vision", "is not project=group"),
        ("vision=gpu", "is not project=group with a group of local, ray"),
        ("=ray", "is not project=group"),
        ("a=ray,a=local", "names the project 'a' twice"),
    ]:
        with pytest.raises(ConfigError) as caught:
            parse_project_groups(text, GROUPS)
        assert problem in caught.value.message, text
        assert "vision=ray,default=local" in caught.value.message


def test_the_settings_carry_the_project_groups() -> None:
    settings = load_server_settings(
        {
            "LIQI_RESOURCE_GROUPS": "ray=ray:http://127.0.0.1:8265",
            "LIQI_PROJECT_RESOURCE_GROUPS": "vision=ray",
        }
    )
    assert settings.project_groups == (("vision", "ray"),)
    with pytest.raises(ConfigError):
        load_server_settings({"LIQI_PROJECT_RESOURCE_GROUPS": "vision=ray"})
