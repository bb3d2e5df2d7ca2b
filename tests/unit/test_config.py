"""Profile file, client settings precedence and server settings. Environments are plain dicts."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from liqi.config import (
    ClientConfig,
    Profile,
    ProfileFile,
    load_server_settings,
    profile_path,
    resolve_client_config,
    write_private_file,
)
from liqi.errors import ConfigError

# --- ProfileFile: load / save -----------------------------------------------------------------


def _sample(path: Path) -> ProfileFile:
    return ProfileFile(
        path=path,
        current="prod",
        profiles={
            "default": Profile(name="default", endpoint="http://127.0.0.1:8080"),
            "prod": Profile(
                name="prod",
                endpoint="https://liqi.example.com",
                access_id="AKIDprod0001",
                access_key='s3cr3t"with\\quotes',
                project="algo_platform",
                oss_host="cn-hangzhou.oss.aliyun-inc.com",
            ),
            "team.eu": Profile(name="team.eu", project="项目", access_id="AKID-eu"),
        },
    )


def test_profile_file_save_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    original = _sample(path)

    original.save()

    assert ProfileFile.load(path) == original


def test_profile_file_save_writes_toml_without_empty_fields(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    file = ProfileFile(path=path)
    file.upsert(Profile(name="default", endpoint="http://h:1", project="p1"))

    file.save()

    assert path.read_text(encoding="utf-8") == (
        'current = "default"\n\n[profiles.default]\nendpoint = "http://h:1"\nproject = "p1"\n'
    )


def test_profile_file_load_missing_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    loaded = ProfileFile.load(path)

    assert loaded == ProfileFile(path=path, current=None, profiles={})
    assert not path.exists()


def test_profile_file_saved_file_has_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"

    _sample(path).save()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_profile_file_save_over_a_readable_file_makes_it_private(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('current = "old"\n', encoding="utf-8")
    path.chmod(0o644)

    _sample(path).save()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ProfileFile.load(path).current == "prod"


def test_profile_file_save_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "config.toml"

    _sample(path).save()

    assert ProfileFile.load(path).profiles.keys() == {"default", "prod", "team.eu"}


def test_profile_file_atomic_save_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    file = _sample(path)

    file.save()
    file.upsert(Profile(name="extra", endpoint="http://e:1"), make_current=True)
    file.save()

    assert sorted(os.listdir(tmp_path)) == ["config.toml"]
    assert ProfileFile.load(path).current == "extra"


def test_write_private_file_failed_replace_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    target.mkdir()  # os.replace of a file onto a directory fails

    with pytest.raises(IsADirectoryError):
        write_private_file(target, b"current = 'x'\n")

    assert sorted(os.listdir(tmp_path)) == ["config.toml"]
    assert target.is_dir()
    assert list(target.iterdir()) == []


def test_write_private_file_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "secret.key"
    write_private_file(target, b"first")

    write_private_file(target, b"second")

    assert target.read_bytes() == b"second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[profiles.default]\nendpoint = "http://h:1"\nregion = "cn-hangzhou"\n',
            r"unknown key\(s\) region in \[profiles\.default\]\. Known keys: endpoint, ",
        ),
        (
            '[profiles.prod]\nsecret = "x"\naccesskey = "y"\n',
            r"unknown key\(s\) accesskey, secret in \[profiles\.prod\]",
        ),
        ("profiles = 3\n", r"'profiles' must be a table of \[profiles\.<name>\] tables"),
        ('[profiles]\ndefault = "x"\n', r"\[profiles\.default\] must be a table"),
    ],
    ids=["unknown-key", "two-unknown-keys", "profiles-not-table", "profile-not-table"],
)
def test_profile_file_load_bad_structure_names_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError, match=rf"^{path}: {expected}"):
        ProfileFile.load(path)


@pytest.mark.parametrize(
    "content",
    [b"current = \n", b"[profiles.default\n", b'current = "a"\ncurrent = "b"\n', b"\xff\xfe=1"],
    ids=["missing-value", "unclosed-table", "duplicate-key", "not-utf8"],
)
def test_profile_file_load_malformed_file_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(content)

    with pytest.raises(ConfigError) as caught:
        ProfileFile.load(path)

    message = str(caught.value)
    assert message.startswith(f"Cannot read the profile file {path}: ")
    assert message.endswith("Fix or delete it.")


def test_profile_file_upsert_first_profile_becomes_current(tmp_path: Path) -> None:
    file = ProfileFile(path=tmp_path / "config.toml")

    file.upsert(Profile(name="first"))
    file.upsert(Profile(name="second"))

    assert file.current == "first"
    assert sorted(file.profiles) == ["first", "second"]


def test_profile_file_upsert_make_current_and_replace(tmp_path: Path) -> None:
    file = ProfileFile(path=tmp_path / "config.toml")
    file.upsert(Profile(name="first", project="p1"))

    file.upsert(Profile(name="second"), make_current=True)
    file.upsert(Profile(name="first", project="p2"))

    assert file.current == "second"
    assert file.profiles["first"].project == "p2"


def test_profile_file_get_unknown_profile_lists_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    file = _sample(path)

    with pytest.raises(ConfigError) as caught:
        file.get("staging")

    assert str(caught.value) == (
        f"No profile named 'staging' in {path}. Known profiles: default, prod, team.eu."
    )


def test_profile_file_get_with_no_profiles_says_none(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Known profiles: none\.$"):
        ProfileFile(path=tmp_path / "config.toml").get("default")


# --- resolve_client_config --------------------------------------------------------------------


def _home_with_profiles(home: Path) -> dict[str, str]:
    file = ProfileFile(path=home / "config.toml")
    for name in ("default", "other", "third"):
        file.upsert(
            Profile(
                name=name,
                endpoint=f"http://{name}.example:8080/",
                access_id=f"AKID-{name}",
                access_key=f"key-of-{name}",
                project=f"project_{name}",
            )
        )
    file.save()
    return {"LIQI_HOME": str(home)}


def test_resolve_client_config_uses_the_current_profile(tmp_path: Path) -> None:
    environ = _home_with_profiles(tmp_path)

    assert resolve_client_config(environ) == ClientConfig(
        endpoint="http://default.example:8080",
        access_id="AKID-default",
        access_key="key-of-default",
        project="project_default",
        profile="default",
    )


@pytest.mark.parametrize(
    ("env_profile", "arg_profile", "chosen"),
    [
        (None, None, "default"),
        ("other", None, "other"),
        (None, "third", "third"),
        ("other", "third", "third"),
        ("", None, "default"),
    ],
    ids=["current", "env", "argument", "argument-over-env", "empty-env"],
)
def test_resolve_client_config_profile_choice(
    tmp_path: Path, env_profile: str | None, arg_profile: str | None, chosen: str
) -> None:
    environ = _home_with_profiles(tmp_path)
    if env_profile is not None:
        environ["LIQI_PROFILE"] = env_profile

    config = resolve_client_config(environ, profile=arg_profile)

    assert config.profile == chosen
    assert config.access_id == f"AKID-{chosen}"
    assert config.endpoint == f"http://{chosen}.example:8080"


@pytest.mark.parametrize(
    ("field", "env_var", "in_profile", "env_value", "arg_value"),
    [
        (
            "endpoint",
            "LIQI_ENDPOINT",
            "http://other.example:8080",
            "http://env.example:1",
            "http://arg.example:2",
        ),
        ("access_id", "LIQI_ACCESS_ID", "AKID-other", "AKID-env", "AKID-arg"),
        ("access_key", "LIQI_ACCESS_KEY", "key-of-other", "key-env", "key-arg"),
        ("project", "LIQI_PROJECT", "project_other", "project_env", "project_arg"),
    ],
    ids=["endpoint", "access-id", "access-key", "project"],
)
def test_resolve_client_config_argument_over_env_over_profile(
    tmp_path: Path, field: str, env_var: str, in_profile: str, env_value: str, arg_value: str
) -> None:
    environ = {**_home_with_profiles(tmp_path), "LIQI_PROFILE": "other"}
    with_env = {**environ, env_var: env_value}

    assert getattr(resolve_client_config(environ), field) == in_profile
    assert getattr(resolve_client_config(with_env), field) == env_value
    assert getattr(resolve_client_config(with_env, **{field: arg_value}), field) == arg_value
    assert resolve_client_config(with_env, **{field: arg_value}).profile == "other"


def test_resolve_client_config_env_fills_fields_the_profile_lacks(tmp_path: Path) -> None:
    file = ProfileFile(path=tmp_path / "config.toml")
    file.upsert(Profile(name="partial", endpoint="http://partial:9000"))
    file.save()
    environ = {"LIQI_HOME": str(tmp_path), "LIQI_ACCESS_ID": "AKID-env"}

    config = resolve_client_config(environ, project="from_arg")

    assert config == ClientConfig(
        endpoint="http://partial:9000",
        access_id="AKID-env",
        access_key=None,
        project="from_arg",
        profile="partial",
    )


def test_resolve_client_config_without_any_file_uses_defaults(tmp_path: Path) -> None:
    config = resolve_client_config({"LIQI_HOME": str(tmp_path / "empty")})

    assert config == ClientConfig(
        endpoint="http://127.0.0.1:8080",
        access_id=None,
        access_key=None,
        project=None,
        profile=None,
    )


def test_resolve_client_config_strips_trailing_slashes(tmp_path: Path) -> None:
    config = resolve_client_config(
        {"LIQI_HOME": str(tmp_path)}, endpoint="https://liqi.example.com/base//"
    )

    assert config.endpoint == "https://liqi.example.com/base"


@pytest.mark.parametrize(
    ("env_profile", "arg_profile"),
    [("staging", None), (None, "staging"), ("default", "staging")],
    ids=["env", "argument", "argument-over-existing-env"],
)
def test_resolve_client_config_unknown_profile_is_config_error(
    tmp_path: Path, env_profile: str | None, arg_profile: str | None
) -> None:
    environ = _home_with_profiles(tmp_path)
    if env_profile is not None:
        environ["LIQI_PROFILE"] = env_profile

    with pytest.raises(ConfigError, match=r"^No profile named 'staging' in .*config\.toml\."):
        resolve_client_config(environ, profile=arg_profile)


def test_resolve_client_config_malformed_file_is_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[profiles.default\n", encoding="utf-8")

    with pytest.raises(ConfigError, match=r"Cannot read the profile file "):
        resolve_client_config({"LIQI_HOME": str(tmp_path)})


def test_resolve_client_config_liqi_config_overrides_the_home_file(tmp_path: Path) -> None:
    home_environ = _home_with_profiles(tmp_path / "home")
    custom = ProfileFile(path=tmp_path / "elsewhere" / "custom.toml")
    custom.upsert(Profile(name="custom", endpoint="http://custom:7000", project="p_custom"))
    custom.save()
    environ = {**home_environ, "LIQI_CONFIG": str(custom.path)}

    config = resolve_client_config(environ)

    assert profile_path(environ) == custom.path
    assert (config.profile, config.endpoint, config.project) == (
        "custom",
        "http://custom:7000",
        "p_custom",
    )


def test_profile_path_defaults_under_liqi_home(tmp_path: Path) -> None:
    assert profile_path({"LIQI_HOME": str(tmp_path)}) == tmp_path / "config.toml"


def test_profile_path_without_liqi_home_is_in_the_user_home() -> None:
    assert profile_path({}) == Path.home() / ".liqi" / "config.toml"


# --- load_server_settings ---------------------------------------------------------------------


def test_load_server_settings_defaults(tmp_path: Path) -> None:
    settings = load_server_settings({"LIQI_HOME": str(tmp_path)})

    assert (settings.home, settings.host, settings.port, settings.database_url) == (
        tmp_path,
        "127.0.0.1",
        8080,
        None,
    )
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'liqi.db'}"
    assert settings.max_body_bytes == 16 * 1024 * 1024
    assert (settings.run_dir, settings.log_dir, settings.store_dir) == (
        tmp_path / "run",
        tmp_path / "logs",
        tmp_path / "store",
    )
    assert settings.secret_key_path == tmp_path / "secret.key"
    assert settings.profile_path == tmp_path / "config.toml"


def test_load_server_settings_database_busy_timeout(tmp_path: Path) -> None:
    home = {"LIQI_HOME": str(tmp_path)}

    assert load_server_settings(home).database_busy_timeout_s == 30.0
    chosen = load_server_settings({**home, "LIQI_DATABASE_BUSY_TIMEOUT_S": "2.5"})
    assert chosen.database_busy_timeout_s == 2.5
    with pytest.raises(ConfigError, match="LIQI_DATABASE_BUSY_TIMEOUT_S='0'"):
        load_server_settings({**home, "LIQI_DATABASE_BUSY_TIMEOUT_S": "0"})


def test_load_server_settings_without_liqi_home_uses_the_user_home() -> None:
    assert load_server_settings({}).home == (Path.home() / ".liqi").absolute()


def test_load_server_settings_home_argument_over_env(tmp_path: Path) -> None:
    settings = load_server_settings({"LIQI_HOME": str(tmp_path / "env")}, home=tmp_path / "arg")

    assert settings.home == tmp_path / "arg"


def test_load_server_settings_relative_home_is_made_absolute() -> None:
    settings = load_server_settings({"LIQI_HOME": "relative/home"})

    assert settings.home == Path.cwd() / "relative" / "home"
    assert settings.home.is_absolute()


@pytest.mark.parametrize(
    ("env_port", "arg_port", "port"),
    [
        ("9000", None, 9000),
        ("9000", 9100, 9100),
        ("9000", 0, 0),
        ("0", None, 0),
        ("65535", None, 65535),
        ("", None, 8080),
        (None, 1, 1),
    ],
    ids=["env", "argument-over-env", "zero-argument", "zero-env", "highest", "empty-env", "arg"],
)
def test_load_server_settings_port(
    tmp_path: Path, env_port: str | None, arg_port: int | None, port: int
) -> None:
    environ = {"LIQI_HOME": str(tmp_path)}
    if env_port is not None:
        environ["LIQI_PORT"] = env_port

    assert load_server_settings(environ, port=arg_port).port == port


@pytest.mark.parametrize("env_port", ["abc", "80.5", "8080x", "0x50", "eighty"], ids=str)
def test_load_server_settings_invalid_liqi_port(tmp_path: Path, env_port: str) -> None:
    environ = {"LIQI_HOME": str(tmp_path), "LIQI_PORT": env_port}

    with pytest.raises(ConfigError) as caught:
        load_server_settings(environ)

    assert str(caught.value) == f"LIQI_PORT={env_port!r} is not a port number."


def test_load_server_settings_invalid_liqi_port_even_when_argument_given(tmp_path: Path) -> None:
    environ = {"LIQI_HOME": str(tmp_path), "LIQI_PORT": "abc"}

    with pytest.raises(ConfigError, match=r"^LIQI_PORT='abc' is not a port number\.$"):
        load_server_settings(environ, port=9000)


@pytest.mark.parametrize(
    ("env_port", "arg_port", "shown"),
    [
        ("65536", None, 65536),
        ("-1", None, -1),
        ("100000", None, 100000),
        (None, 70000, 70000),
        (None, -5, -5),
        ("9000", 65536, 65536),
    ],
    ids=["env-65536", "env-negative", "env-huge", "arg-too-high", "arg-negative", "arg-over-env"],
)
def test_load_server_settings_port_out_of_range(
    tmp_path: Path, env_port: str | None, arg_port: int | None, shown: int
) -> None:
    environ = {"LIQI_HOME": str(tmp_path)}
    if env_port is not None:
        environ["LIQI_PORT"] = env_port

    with pytest.raises(ConfigError) as caught:
        load_server_settings(environ, port=arg_port)

    assert str(caught.value) == (
        f"Port {shown} is out of range: use 0 to 65535 (0 picks a free one)."
    )


def test_load_server_settings_database_url_from_env(tmp_path: Path) -> None:
    url = "postgresql+psycopg://liqi:pw@db.example:5432/liqi"

    settings = load_server_settings({"LIQI_HOME": str(tmp_path), "LIQI_DATABASE_URL": url})

    assert settings.database_url == url
    assert settings.effective_database_url == url


def test_load_server_settings_empty_database_url_means_sqlite(tmp_path: Path) -> None:
    settings = load_server_settings({"LIQI_HOME": str(tmp_path), "LIQI_DATABASE_URL": ""})

    assert settings.database_url is None
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'liqi.db'}"


@pytest.mark.parametrize(
    ("env_host", "arg_host", "host"),
    [
        (None, None, "127.0.0.1"),
        ("0.0.0.0", None, "0.0.0.0"),
        ("0.0.0.0", "::1", "::1"),
        ("", None, "127.0.0.1"),
    ],
    ids=["default", "env", "argument-over-env", "empty-env"],
)
def test_load_server_settings_host(
    tmp_path: Path, env_host: str | None, arg_host: str | None, host: str
) -> None:
    environ = {"LIQI_HOME": str(tmp_path)}
    if env_host is not None:
        environ["LIQI_HOST"] = env_host

    assert load_server_settings(environ, host=arg_host).host == host
