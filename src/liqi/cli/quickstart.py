"""`liqi quickstart`: the seed's whole workflow, end to end, on the embedded defaults.

Start the control plane, create a bucket with ``models/``, add ``mnist_softmax.py`` as a
resource, run the seed's ``pai -name tensorflow121 ...`` line, deploy the seed's
``eas_mnist.json`` (bucket filled in), send real MNIST test images through the gateway and
print the predicted digits next to the labels. Safe to run again: every step reuses what an
earlier run made.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.client import Client
from liqi.control.server import daemon
from liqi.errors import LiqiError, NotFoundError, ServerStartError

QUICKSTART_PROJECT = "quickstart"
BUCKET = "quickstart-models"
SERVICE = "mnist_saved_model_example"
PAI_LINE = (
    'pai -name tensorflow121 -Dscript="odps://{project}/resources/mnist_softmax.py" '
    '-Dvolumes="odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test" '
    '-Dbuckets="oss://{bucket}/models/"'
)
JOB_TIMEOUT_S = 900.0
SERVICE_TIMEOUT_S = 300.0
STEPS = 7


def examples_dir() -> Path:
    """The seed's files: inside an installed wheel, or examples/mnist of a source checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "_examples" / "mnist", package.parents[1] / "examples" / "mnist"):
        if (candidate / "mnist_softmax.py").is_file():
            return candidate
    raise NotFoundError(
        "Cannot find the example files (mnist_softmax.py, eas_mnist.json): reinstall liqi "
        "from its wheel or run from a clone of the repository."
    )


def _step(number: int, text: str) -> None:
    click.secho(f"[{number}/{STEPS}] {text}", bold=True)


def _note(text: str) -> None:
    click.echo(f"      {text}")


@click.command()
@click.option("--host", default=None, help="Address for the server [default 127.0.0.1].")
@click.option(
    "--port", type=int, default=None, help="Port for the server [default 8080; 0 picks a free one]."
)
@click.option(
    "--images",
    default=20,
    show_default=True,
    type=click.IntRange(1, 10000),
    help="MNIST test images to send to the service.",
)
@pass_cli
def quickstart(obj: CliContext, host: str | None, port: int | None, images: int) -> None:
    """Run the whole workflow: train MNIST, export it to a bucket, deploy it, predict.

    \b
    In order: start a local control plane; create bucket oss://quickstart-models/ with
    models/; add examples/mnist/mnist_softmax.py as a resource; run the seed's
      pai -name tensorflow121 -Dscript=odps://quickstart/resources/mnist_softmax.py ...
    deploy the seed's eas_mnist.json (bucket filled in) as service
    mnist_saved_model_example; send real MNIST test images through the gateway.

    Safe to run again: it reuses the server, project, bucket, model and service it finds.
    Needs TensorFlow: pip install 'liqi[tf]'.
    """
    started = time.monotonic()
    settings = obj.server_settings(host, port)
    _step(1, f"Control plane (home {settings.home})")
    status = daemon.start_server(settings)
    record = status.record
    if record is None:
        raise ServerStartError("The control plane did not report its address; see its log.")
    _note(f"running at {record.url} (pid {record.pid})")
    files = examples_dir()
    with obj.client() as client:
        _project(client)
        _step(2, f"Bucket oss://{BUCKET}/ with models/")
        _bucket(client)
        _step(3, "Resource mnist_softmax.py (odpscmd: add file mnist_softmax.py)")
        client.add_resource(files / "mnist_softmax.py", force=True, project=QUICKSTART_PROJECT)
        _note(f"odps://{QUICKSTART_PROJECT}/resources/mnist_softmax.py")
        _step(4, "Training (PAI-TF)")
        _train(client)
        _step(5, f"Deploy eas_mnist.json as service {SERVICE}")
        endpoint = _deploy(client, files / "eas_mnist.json", settings.home)
        _step(6, "Predict real MNIST test images through the gateway")
        _predict(record.url, images)
    _step(7, f"Done in {time.monotonic() - started:.0f}s. Try next:")
    _next_steps(endpoint, settings.home)


def _project(client: Client) -> None:
    try:
        client.get_project(QUICKSTART_PROJECT)
    except NotFoundError:
        client.create_project(QUICKSTART_PROJECT, "Created by `liqi quickstart`.")
        _note(f"created project {QUICKSTART_PROJECT}")


def _bucket(client: Client) -> None:
    try:
        client.get_bucket(BUCKET)
        _note("already there")
    except NotFoundError:
        client.create_bucket(BUCKET, project=QUICKSTART_PROJECT, comment="liqi quickstart")
        _note("created")
    client.mkdir(BUCKET, "models/")


def _has_model(client: Client) -> bool:
    return any(
        info.key.endswith("/saved_model.pb") for info in client.iter_objects(BUCKET, "models/")
    )


def _train(client: Client) -> None:
    from liqi.cli.pai import job_request
    from liqi.core.pai_command import parse_pai

    line = PAI_LINE.format(project=QUICKSTART_PROJECT, bucket=BUCKET)
    if _has_model(client):
        _note(f"reusing the model already in oss://{BUCKET}/models/ (delete it to train again)")
        return
    _note(line)
    cmd = parse_pai(shlex.split(line)[1:])
    script, options = job_request(client, cmd, QUICKSTART_PROJECT)
    job = client.submit_job(script, **options)
    _note(f"job {job.id}; its output: liqi job logs {job.id}")
    from rich.console import Console

    console = Console(stderr=True)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    offset, last = 0, ""
    with console.status("training ...") as spinner:
        while time.monotonic() < deadline:
            job = client.get_job(job.id)
            chunk = client.job_log_chunk(job.id, offset)
            offset = int(chunk.get("offset", offset))
            for text in str(chunk.get("data", "")).splitlines():
                if text.strip():
                    last = text.strip()
                    if last.lower().startswith("accuracy"):
                        _note(last)
            spinner.update(f"training: {job.state}  {last[:70]}")
            if job.is_final:
                break
            time.sleep(0.5)
    if job.state != "SUCCEEDED":
        raise LiqiError(
            f"The training job {job.id} ended {job.state}: {job.reason}. Its output: "
            f"liqi job logs {job.id}"
        )
    _note(f"job {job.id} SUCCEEDED: {job.reason}")


def _deploy(client: Client, spec_file: Path, home: Path) -> str:
    text = spec_file.read_text(encoding="utf-8").replace("${your_bucket}", BUCKET)
    document: dict[str, Any] = json.loads(text)
    credentials = _write_credentials(client, home)
    document["osscredentials"] = str(credentials)
    try:
        info = client.get_service(SERVICE)
        _note(f"service exists ({info.state}); reusing it")
        if info.state == "STOPPED":
            client.start_service(SERVICE)
    except NotFoundError:
        info = client.create_service(document, project=QUICKSTART_PROJECT)
        _note(f"endpoint {info.endpoint}")
        _note('token: none (generate_token is "false")')

    def show(change: Any) -> None:
        if change.state == "RUNNING":
            return
        if change.reason.startswith("Total:"):
            _note(f"[OK] Waiting [{change.reason}]")
        else:
            _note(
                f"[OK] {change.state.capitalize()}"
                + (f": {change.reason}" if change.reason else "")
            )

    final = client.wait_service(
        SERVICE, timeout_s=SERVICE_TIMEOUT_S, until={"RUNNING", "FAILED"}, on_change=show
    )
    if final.state != "RUNNING":
        raise LiqiError(
            f"Service {SERVICE} is {final.state}: {final.reason}. See `liqi eas desc {SERVICE}`."
        )
    _note("[OK] Service is running")
    return str(final.endpoint)


def _write_credentials(client: Client, home: Path) -> Path:
    """The seed's two credential files, written for this server's admin key."""
    folder = home / "quickstart"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    access_id, access_key = client.config.access_id, client.config.access_key
    oss = folder / ".osscredentials"
    oss.write_text(
        f"[OSSCredentials]\nhost=127.0.0.1\naccessid={access_id}\naccesskey={access_key}\n"
    )
    eas = folder / "eas_config.ini"
    eas.write_text(f"access_id={access_id}\naccess_key={access_key}\n")
    for path in (oss, eas):
        path.chmod(0o600)
    return oss


def _predict(url: str, count: int) -> None:
    import numpy as np

    from liqi.client.predict import PredictClient
    from liqi.datasets.mnist_reader import builtin_dir, read_data_sets

    test = read_data_sets(str(builtin_dir())).test
    images = test.images[:count].astype(np.float32)
    labels = test.labels[:count]
    with PredictClient(url, SERVICE) as predict:
        scores = predict.predict({"images": images})["scores"]
    predicted = np.argmax(scores, axis=1)
    shown = min(count, 20)
    click.echo("      label:     " + " ".join(str(int(d)) for d in labels[:shown]))
    click.echo("      predicted: " + " ".join(str(int(d)) for d in predicted[:shown]))
    right = int(np.sum(predicted == labels))
    _note(f"accuracy: {right}/{count} = {right / count:.2%}")


def _next_steps(endpoint: str, home: Path) -> None:
    config = home / "quickstart" / "eas_config.ini"
    lines = [
        f"curl {endpoint}    # the model's signature",
        f"liqi eas -c {config} desc {SERVICE}",
        f"liqi eas logs {SERVICE}",
        'python -c "import liqi, numpy as np; '
        f"print(liqi.PredictClient('{endpoint}', '{SERVICE}')"
        ".predict({'images': np.zeros((1, 784), np.float32)})['scores'])\"",
        "liqi console    # the odpscmd-style console",
        f"liqi eas stop {SERVICE} && liqi server stop    # when you are done",
    ]
    for line in lines:
        click.echo(f"  {line}")
