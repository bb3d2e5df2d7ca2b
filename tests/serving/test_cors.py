"""CORS: a browser page from an allowed origin may call `liqi serve` and the control plane
(API and gateway); other origins are refused at the preflight and get no CORS headers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from liqi.asgi.cors import CorsPolicy
from liqi.errors import ConfigError
from liqi.serving.server import ProcessorOptions, ServeOptions, build_app
from tests.support.model_server import LiveModelServer, live_model_server
from tests.support.servers import LiveServer, live_server

PAGE = "http://127.0.0.1:8000"
OTHER = "http://evil.example:9000"
TOKEN = "cors-token"


def preflight(url: str, origin: str, headers: str = "authorization,content-type") -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
        trust_env=False,
    )


def serve_echo(tmp_path: Path, cors: CorsPolicy | None) -> Iterator[LiveModelServer]:
    code = tmp_path / "echo"
    code.mkdir()
    (code / "app.py").write_text(
        textwrap.dedent(
            """
            import allspark

            class Echo(allspark.BaseProcessor):
                def process(self, data):
                    return data, 200
            """
        )
    )
    options = ServeOptions(
        uri=str(code),
        cache_dir=tmp_path / "cache",
        name="echo",
        poll_interval_s=0,
        token=TOKEN,
        cors=cors,
        processor=ProcessorOptions(name="python", path=str(code), entry="app.py"),
    )
    with live_model_server(build_app(options)) as server:
        yield server


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveModelServer]:
    yield from serve_echo(tmp_path_factory.mktemp("cors"), CorsPolicy.parse([PAGE]))


@pytest.fixture(scope="module")
def echo_without_cors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveModelServer]:
    yield from serve_echo(tmp_path_factory.mktemp("nocors"), None)


def test_parse_accepts_origins_lists_and_any() -> None:
    policy = CorsPolicy.parse(["http://127.0.0.1:8000/, https://App.example", "*"])
    assert policy is not None
    assert policy.origins == frozenset({"http://127.0.0.1:8000", "https://app.example", "*"})
    assert CorsPolicy.parse(["", " , "]) is None
    only = CorsPolicy.parse(["http://[::1]:3000"])
    assert only is not None
    assert only.allows("http://[::1]:3000")
    assert not only.allows(PAGE)


@pytest.mark.parametrize("value", ["127.0.0.1:8000", "http://host/page.html", "ftp://x"])
def test_parse_refuses_what_is_not_an_origin(value: str) -> None:
    with pytest.raises(ConfigError, match="is not an origin"):
        CorsPolicy.parse([value])


def test_preflight_from_an_allowed_origin_is_answered(echo: LiveModelServer) -> None:
    answer = preflight(f"{echo.url}/api/predict/echo", PAGE)
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == PAGE
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert answer.headers["access-control-allow-headers"] == "authorization,content-type"
    assert int(answer.headers["access-control-max-age"]) > 0


def test_preflight_from_another_origin_is_refused_saying_how_to_allow_it(
    echo: LiveModelServer,
) -> None:
    answer = preflight(f"{echo.url}/api/predict/echo", OTHER)
    assert answer.status_code == 403
    assert "access-control-allow-origin" not in answer.headers
    assert f"--cors-origin {OTHER}" in answer.text


def test_answers_to_an_allowed_origin_carry_cors_headers(echo: LiveModelServer) -> None:
    answer = httpx.post(
        f"{echo.url}/api/predict/echo",
        content=b"hello",
        headers={"Origin": PAGE, "Authorization": TOKEN},
        trust_env=False,
    )
    assert answer.status_code == 200
    assert answer.content == b"hello"
    assert answer.headers["access-control-allow-origin"] == PAGE
    assert "Inference-Header-Content-Length" in answer.headers["access-control-expose-headers"]
    # Errors too, so the page can read the reason.
    refused = httpx.post(
        f"{echo.url}/api/predict/echo", content=b"x", headers={"Origin": PAGE}, trust_env=False
    )
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == PAGE


def test_other_origins_and_plain_clients_get_no_cors_headers(echo: LiveModelServer) -> None:
    for headers in ({"Origin": OTHER}, {}):
        answer = httpx.post(
            f"{echo.url}/api/predict/echo",
            content=b"hi",
            headers={**headers, "Authorization": TOKEN},
            trust_env=False,
        )
        assert answer.status_code == 200
        assert answer.content == b"hi"
        assert "access-control-allow-origin" not in answer.headers


def test_without_origins_no_preflight_is_answered(echo_without_cors: LiveModelServer) -> None:
    answer = preflight(f"{echo_without_cors.url}/api/predict/echo", PAGE)
    assert "access-control-allow-origin" not in answer.headers
    assert answer.status_code >= 400


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("cors_plane") / "home"
    with live_server(home, None, cors_origins=(PAGE,)) as live:
        yield live


def test_control_plane_answers_preflights_for_the_api_and_the_gateway(plane: LiveServer) -> None:
    for path in ("/api/v1/services", "/api/predict/anything"):
        answer = preflight(f"{plane.url}{path}", PAGE, "authorization,x-liqi-date")
        assert answer.status_code == 204, answer.text
        assert answer.headers["access-control-allow-origin"] == PAGE
    assert preflight(f"{plane.url}/api/v1/services", OTHER).status_code == 403


def test_control_plane_answers_carry_cors_headers(plane: LiveServer) -> None:
    health = httpx.get(f"{plane.url}/healthz", headers={"Origin": PAGE}, trust_env=False)
    assert health.status_code == 200
    assert health.headers["access-control-allow-origin"] == PAGE
    # An unsigned API call is refused, and the page can still read why.
    refused = httpx.get(f"{plane.url}/api/v1/services", headers={"Origin": PAGE}, trust_env=False)
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == PAGE
    missing = httpx.post(
        f"{plane.url}/api/predict/nope", content=b"{}", headers={"Origin": PAGE}, trust_env=False
    )
    assert missing.status_code == 404
    assert missing.headers["access-control-allow-origin"] == PAGE


@pytest.mark.parametrize("command", [["serve", "/nonexistent"], ["server", "run", "--port", "0"]])
def test_cli_refuses_a_bad_origin_before_starting(command: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "liqi", "--home", str(tmp_path), *command],
        env={"PATH": "/usr/bin:/bin", "LIQI_CORS_ORIGINS": "localhost:3000"},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert "'localhost:3000' is not an origin" in result.stderr
