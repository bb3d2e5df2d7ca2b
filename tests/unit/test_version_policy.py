"""Version policy, labels and plans: which versions to serve (pure logic)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from liqi.core.version_policy import (
    VersionPlan,
    VersionPolicy,
    parse_labels,
    plan,
    resolve_labels,
)
from liqi.errors import InvalidRequestError

pytestmark = pytest.mark.timeout(60)

versions = st.integers(min_value=0, max_value=10_000)
policies = st.one_of(
    st.builds(VersionPolicy, latest=st.integers(min_value=1, max_value=50)),
    st.builds(
        VersionPolicy,
        latest=st.none(),
        specific=st.lists(versions, min_size=1, max_size=8).map(tuple),
    ),
    st.just(VersionPolicy(latest=None, all=True)),
)
labels = st.dictionaries(st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True), versions)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("latest", VersionPolicy()),
        ("latest:1", VersionPolicy(latest=1)),
        ("latest:3", VersionPolicy(latest=3)),
        (" LATEST : 2 ", VersionPolicy(latest=2)),
        ("all", VersionPolicy(all=True)),
        ("specific:3,1", VersionPolicy(specific=(1, 3))),
        ("1,3", VersionPolicy(specific=(1, 3))),
        (" 1 , 3 , 3 ", VersionPolicy(specific=(1, 3))),
        ("2", VersionPolicy(specific=(2,))),
        ("0", VersionPolicy(specific=(0,))),
    ],
)
def test_parse_accepts_the_documented_forms(text: str, expected: VersionPolicy) -> None:
    assert VersionPolicy.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", " ", "latest:0", "latest:-1", "latest:x", "latest:1,2", "all:2", "specific:",
     "specific:a", "1,,3", "-1", "newest", "1;3", "specific", "v1"],
)  # fmt: skip
def test_parse_refuses_anything_else_and_lists_the_forms(text: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        VersionPolicy.parse(text)
    assert repr(text) in caught.value.message
    assert "latest, latest:N (N >= 1), all, specific:1,3" in caught.value.message


def test_describe_gives_the_canonical_text() -> None:
    assert VersionPolicy().describe() == "latest"
    assert VersionPolicy(latest=4).describe() == "latest:4"
    assert VersionPolicy(all=True).describe() == "all"
    assert VersionPolicy(specific=(3, 1, 3)).describe() == "specific:1,3"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"latest": 0},
        {"latest": None},
        {"latest": 2, "all": True},
        {"latest": 2, "specific": (1,)},
        {"all": True, "specific": (1,)},
        {"specific": (-1,)},
    ],
)
def test_a_policy_has_exactly_one_valid_mode(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidRequestError):
        VersionPolicy(**kwargs)  # type: ignore[arg-type]


def test_modes_other_than_latest_clear_latest() -> None:
    assert VersionPolicy(all=True).latest is None
    assert VersionPolicy(specific=(2,)).latest is None


def test_select_examples() -> None:
    available = [4, 1, 3, 2, 3]
    assert VersionPolicy().select(available) == [4]
    assert VersionPolicy(latest=2).select(available) == [3, 4]
    assert VersionPolicy(latest=9).select(available) == [1, 2, 3, 4]
    assert VersionPolicy(all=True).select(available) == [1, 2, 3, 4]
    assert VersionPolicy(specific=(1, 3, 7)).select(available) == [1, 3]
    assert VersionPolicy(specific=(7,)).select(available) == []
    assert VersionPolicy().select([]) == []
    assert VersionPolicy().select(v for v in (5, 6)) == [6]  # any iterable, once


@given(policies)
def test_describe_round_trips_through_parse(policy: VersionPolicy) -> None:
    assert VersionPolicy.parse(policy.describe()) == policy


@given(policies, st.lists(versions, max_size=30))
def test_select_picks_available_versions_ascending(
    policy: VersionPolicy, available: list[int]
) -> None:
    chosen = policy.select(available)
    assert chosen == sorted(set(chosen))
    assert set(chosen) <= set(available)
    if policy.all:
        assert chosen == sorted(set(available))
    elif policy.specific:
        assert set(chosen) == set(policy.specific) & set(available)
    else:
        assert policy.latest is not None
        assert chosen == sorted(set(available))[-policy.latest :]
        assert len(chosen) == min(policy.latest, len(set(available)))


@given(st.sets(versions, max_size=12), st.sets(versions, max_size=12))
def test_plan_reaches_the_wanted_versions(current: set[int], wanted: set[int]) -> None:
    steps = plan(current, wanted)
    assert (current - set(steps.unload)) | set(steps.load) == wanted
    assert not set(steps.load) & current
    assert set(steps.unload) <= current
    assert list(steps.load) == sorted(steps.load)
    assert list(steps.unload) == sorted(steps.unload)


def test_plan_example_loads_newest_last() -> None:
    assert plan([1, 2], [4, 2, 3]) == VersionPlan(load=(3, 4), unload=(1,))
    assert plan([2], [2]) == VersionPlan()


def test_parse_labels_reads_the_cli_form() -> None:
    assert parse_labels("stable=1,canary=2") == {"stable": 1, "canary": 2}
    assert parse_labels(" stable = 1 , , canary=2,stable=1 ") == {"stable": 1, "canary": 2}
    assert parse_labels("") == {}


@given(labels)
def test_parse_labels_round_trips(found: dict[str, int]) -> None:
    assert parse_labels(",".join(f"{k}={v}" for k, v in found.items())) == found


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("stable", "write LABEL=VERSION"),
        ("stable=one", "write LABEL=VERSION"),
        ("stable=-1", "write LABEL=VERSION"),
        ("=1", "Invalid version label ''"),
        ("sta-ble=1", "Invalid version label 'sta-ble'"),
        ("stable=1,stable=2", "given twice, for versions 1 and 2"),
    ],
)
def test_parse_labels_refuses_bad_items(text: str, fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_labels(text)
    assert fragment in caught.value.message


def test_resolve_labels_keeps_labels_of_served_versions() -> None:
    assert resolve_labels({"stable": 1, "canary": 2}, {1, 2}) == {"stable": 1, "canary": 2}
    assert resolve_labels({}, []) == {}


def test_resolve_labels_refuses_a_label_of_a_version_not_served() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        resolve_labels({"stable": 1, "canary": 3}, [2, 1])
    assert caught.value.message == (
        "Label 'canary' points at version 3, which is not served. Served versions: 1, 2."
    )
    with pytest.raises(InvalidRequestError, match="Served versions: none"):
        resolve_labels({"stable": 1}, [])


def test_resolve_labels_refuses_bad_names() -> None:
    with pytest.raises(InvalidRequestError, match="Invalid version label 'can ary'"):
        resolve_labels({"can ary": 1}, [1])


@given(labels, st.sets(versions, max_size=8))
def test_resolve_labels_accepts_exactly_labels_of_served_versions(
    found: dict[str, int], served: set[int]
) -> None:
    if set(found.values()) <= served:
        assert resolve_labels(found, served) == found
    else:
        with pytest.raises(InvalidRequestError, match="which is not served"):
            resolve_labels(found, served)
