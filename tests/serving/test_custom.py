"""Custom Python processors (EAS allspark style) loaded from real script files."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from liqi.errors import InvalidRequestError, NotFoundError
from liqi.serving import allspark
from liqi.serving.custom import PythonProcessorLoader, PythonProcessorServable
from liqi.serving.loaders import ModelLoadError
from tests.support.model_server import wait_ready

pytestmark = pytest.mark.timeout(120)

# EAS's template: process() calls pre_process/post_process itself; run() is in __main__.
ALLSPARK_APP = """
    import allspark

    class MyProcessor(allspark.BaseProcessor):
        def initialize(self):
            model_dir = self.get_model_path().decode()
            with open(model_dir + "/weights.txt") as f:
                self.w0, self.w1 = (int(v) for v in f.read().split())

        def pre_process(self, data):
            x, y = data.split(b" ")
            return int(x), int(y)

        def post_process(self, data):
            return bytes(data, encoding="utf8")

        def process(self, data):
            x, y = self.pre_process(data)
            if self.w1 * x + self.w0 >= y:
                return self.post_process("True"), 200
            return self.post_process("False"), 400

    if __name__ == "__main__":
        allspark.default_properties().put("rpc.keepalive", "10000")
        MyProcessor(worker_threads=10).run()
        raise SystemExit("the __main__ block must not run")
"""


@pytest.fixture(autouse=True)
def isolated_imports(tmp_path: Path) -> Iterator[None]:
    """Undo what loading processors does to sys.path and sys.modules."""
    path = list(sys.path)
    before = set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - before:
        module = sys.modules[name]
        file = getattr(module, "__file__", None) or ""
        if (
            name == "allspark"
            or name.startswith("liqi_processor_")
            or file.startswith(str(tmp_path))
        ):
            del sys.modules[name]


def _write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def _load(
    folder: Path, entry: str | None = "app.py", *, model: Path | None = None, **kwargs: object
) -> PythonProcessorServable:
    loader = PythonProcessorLoader(processor_path=str(folder), processor_entry=entry, **kwargs)
    servable = loader.load(model or folder, name="proc", version=1)
    assert isinstance(servable, PythonProcessorServable)
    return servable


def test_an_allspark_processor_runs_unchanged(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.txt").write_text("100 2")
    _write(tmp_path / "code", "app.py", ALLSPARK_APP)
    servable = _load(tmp_path / "code", "./app.py", model=model)
    assert servable.processor == "python"
    assert servable.worker_threads == 10  # from MyProcessor(worker_threads=10) in __main__
    assert servable.instance.model_path == str(model)
    assert servable.process(b"2 104") == (b"True", 200)
    assert servable.process(b"2 105") == (b"False", 400)
    assert not servable.batchable()
    assert servable.warmup_inputs() == {}
    with pytest.raises(InvalidRequestError, match="custom processor"):
        servable.predict({"x": np.zeros(1)})


def test_a_plain_class_with_a_sibling_module(tmp_path: Path) -> None:
    _write(tmp_path, "shout_helper.py", "def shout(text):\n    return text.upper() + '!'\n")
    _write(
        tmp_path,
        "app.py",
        """
        from shout_helper import shout

        class Shouter:
            worker_threads = 3

            def initialize(self):
                self.suffix = " (from " + self.model_path.rsplit("/", 1)[-1] + ")"

            def process(self, data):
                return shout(data.decode()) + self.suffix, 0
        """,
    )
    servable = _load(tmp_path)
    assert servable.worker_threads == 3
    assert servable.process(b"hi") == (f"HI! (from {tmp_path.name})".encode(), 200)


def test_the_explicit_worker_threads_win(tmp_path: Path) -> None:
    _write(tmp_path, "app.py", ALLSPARK_APP)
    (tmp_path / "weights.txt").write_text("0 1")
    assert _load(tmp_path, worker_threads=2).worker_threads == 2


def test_a_processor_that_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(
        tmp_path,
        "app.py",
        """
        class Divider:
            def initialize(self):
                pass

            def process(self, data):
                return str(1 / int(data)).encode(), 200
        """,
    )
    servable = _load(tmp_path)
    assert servable.process(b"4") == (b"0.25", 200)
    with caplog.at_level(logging.ERROR, logger="liqi.serving.custom"):
        assert servable.process(b"0") == (b"ZeroDivisionError: division by zero", 500)
    assert caplog.records[-1].exc_info is not None


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ("None", "returned None; expected a tuple (body: bytes | str, status: int)"),
        ("b'only a body'", "returned b'only a body'; expected a tuple"),
        ("(b'x', 200, 'extra')", "returned (b'x', 200, 'extra'); expected a tuple"),
        ("({'a': 1}, 200)", "returned a body of type dict ({'a': 1})"),
        ("(b'x', '200')", "returned status '200' of type str"),
        ("(b'x', True)", "returned status True of type bool"),
        ("(b'x', 1000)", "returned status 1000; expected an HTTP status in 100..599"),
    ],
)
def test_a_processor_returning_garbage(tmp_path: Path, returned: str, message: str) -> None:
    _write(
        tmp_path,
        "app.py",
        f"""
        class Broken:
            def initialize(self):
                pass

            def process(self, data):
                return {returned}
        """,
    )
    body, status = _load(tmp_path).process(b"anything")
    assert status == 500
    assert message in body.decode()
    assert "Broken.process" in body.decode()


def test_status_and_body_types(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "app.py",
        """
        import numpy as np

        class Echo:
            def initialize(self):
                pass

            def process(self, data):
                kind, _, rest = data.partition(b":")
                if kind == b"bytearray":
                    return bytearray(rest), np.int64(201)
                return "é" + rest.decode(), 404
        """,
    )
    servable = _load(tmp_path)
    assert servable.process(b"bytearray:abc") == (b"abc", 201)
    assert servable.process(b"str:x") == ("éx".encode(), 404)


def test_post_process_encodes_a_non_bytes_body(tmp_path: Path) -> None:
    """Some processors return a value and expect post_process to turn it into bytes."""
    _write(
        tmp_path,
        "app.py",
        """
        import allspark

        class Scorer(allspark.BaseProcessor):
            def initialize(self):
                pass

            def post_process(self, data):
                return str(data).encode()

            def process(self, data):
                return float(data) * 2, 0
        """,
    )
    assert _load(tmp_path).process(b"1.5") == (b"3.0", 200)


def test_a_failing_initialize(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(
        tmp_path,
        "app.py",
        """
        import allspark

        class NeedsWeights(allspark.BaseProcessor):
            def initialize(self):
                raise RuntimeError("no weights in /nowhere")

            def process(self, data):
                return data, 200
        """,
    )
    with caplog.at_level(logging.ERROR), pytest.raises(ModelLoadError) as caught:
        _load(tmp_path)
    message = caught.value.message
    assert "NeedsWeights.initialize()" in message
    assert "RuntimeError: no weights in /nowhere" in message
    assert any(r.exc_info for r in caplog.records)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import no_such_module_here\n", "ModuleNotFoundError: No module named"),
        ("def broken(:\n", "SyntaxError"),
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    ],
    ids=["import-error", "syntax-error", "sys-exit"],
)
def test_a_script_that_cannot_be_imported(tmp_path: Path, source: str, message: str) -> None:
    _write(tmp_path, "app.py", source)
    with pytest.raises(ModelLoadError) as caught:
        _load(tmp_path)
    assert "importing" in caught.value.message
    assert message in caught.value.message


TWO_PROCESSORS = """
    import allspark

    class Upper(allspark.BaseProcessor):
        def process(self, data):
            return data.upper(), 200

    class Lower:
        def initialize(self):
            pass

        def process(self, data):
            return data.lower(), 200

    class Helper:
        pass
"""


def test_several_candidate_classes(tmp_path: Path) -> None:
    _write(tmp_path, "app.py", TWO_PROCESSORS)
    with pytest.raises(ModelLoadError) as caught:
        _load(tmp_path)
    assert "several processor classes (Lower, Upper)" in caught.value.message
    assert "--processor-entry app.py:Lower" in caught.value.message


def test_the_entry_names_the_class(tmp_path: Path) -> None:
    _write(tmp_path, "app.py", TWO_PROCESSORS)
    assert _load(tmp_path, "app.py:Upper").process(b"Ab") == (b"AB", 200)
    assert _load(tmp_path, "app.py:Lower").process(b"Ab") == (b"ab", 200)
    with pytest.raises(ModelLoadError, match=r"no class 'Missing'.*Helper, Lower, Upper"):
        _load(tmp_path, "app.py:Missing")


def test_no_candidate_class(tmp_path: Path) -> None:
    _write(tmp_path, "app.py", "class Config:\n    pass\n\ndef process(data):\n    return data\n")
    with pytest.raises(ModelLoadError) as caught:
        _load(tmp_path)
    assert "defines no processor class" in caught.value.message
    assert "classes found: Config" in caught.value.message


def test_a_constructor_that_needs_arguments(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "app.py",
        """
        class Configured:
            def __init__(self, threshold):
                self.threshold = threshold

            def initialize(self):
                pass

            def process(self, data):
                return data, 200
        """,
    )
    with pytest.raises(ModelLoadError) as caught:
        _load(tmp_path)
    assert "Configured(threshold) in" in caught.value.message
    assert "Give every __init__ argument a default" in caught.value.message


def test_a_processor_keeps_its_own_model_path(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "app.py",
        """
        import allspark

        class Own(allspark.BaseProcessor):
            def __init__(self, worker_threads=8, model_path="weights/own.bin"):
                super().__init__(worker_threads=worker_threads, io_threads=4)
                self.model_path = model_path

            def process(self, data):
                return self.model_path, 200
        """,
    )
    servable = _load(tmp_path)
    assert servable.worker_threads == 8
    assert servable.process(b"") == (b"weights/own.bin", 200)


def test_each_load_imports_a_fresh_module(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "app.py",
        """
        LOADS = []

        class Counter:
            def initialize(self):
                LOADS.append(1)

            def process(self, data):
                return str(len(LOADS)), 200
        """,
    )
    first, second = _load(tmp_path), _load(tmp_path)
    assert first.process(b"") == (b"1", 200)
    assert second.process(b"") == (b"1", 200)


def test_the_processor_path_may_be_the_script(tmp_path: Path) -> None:
    script = _write(tmp_path, "serve_me.py", ALLSPARK_APP)
    (tmp_path / "weights.txt").write_text("0 1")
    loader = PythonProcessorLoader(processor_path=str(script))
    servable = loader.load(tmp_path, name="proc", version=1)
    assert isinstance(servable, PythonProcessorServable)
    assert servable.process(b"3 3") == (b"True", 200)


def test_a_missing_entry_script(tmp_path: Path) -> None:
    _write(tmp_path, "main.py", "")
    with pytest.raises(NotFoundError) as caught:
        _load(tmp_path, "app.py")
    assert "entry 'app.py'" in caught.value.message
    assert "main.py" in caught.value.message


def test_the_entry_is_required(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="--processor-entry"):
        PythonProcessorLoader(processor_path=str(tmp_path))


def test_allspark_properties_and_endpoint() -> None:
    allspark.default_properties().put("rpc.keepalive", 500000)
    assert allspark.default_properties().get("rpc.keepalive") == "500000"
    assert allspark.default_properties().get("rpc.unset", "x") == "x"
    assert allspark.parse_endpoint(None) == ("127.0.0.1", 8080)
    assert allspark.parse_endpoint("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert allspark.parse_endpoint(":9001") == ("127.0.0.1", 9001)
    assert allspark.parse_endpoint("9002") == ("127.0.0.1", 9002)
    with pytest.raises(ValueError, match="host:port"):
        allspark.parse_endpoint("localhost:http")


def test_run_serves_the_processor_over_http(tmp_path: Path) -> None:
    """`python app.py` with `MyProcessor(endpoint=...).run()`: a real server, real requests."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from liqi.serving import allspark

            class Doubler(allspark.BaseProcessor):
                def initialize(self):
                    self.factor = 2

                def process(self, data):
                    return str(int(data) * self.factor).encode(), 200

            if __name__ == "__main__":
                Doubler(worker_threads=3, endpoint="127.0.0.1:{port}").run()
            """
        )
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout_s=60)
        answer = httpx.post(f"{url}/api/predict/app", content=b"21", trust_env=False)
        bad = httpx.post(f"{url}/api/predict/app", content=b"x", trust_env=False)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert answer.status_code == 200
    assert answer.content == b"42"
    assert bad.status_code == 500
    assert b"ValueError" in bad.content
    assert f"Serving processor app at {url}/api/predict/app" in out
    assert process.returncode == 0, err
