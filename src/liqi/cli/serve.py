"""`liqi serve PATH_OR_URI`: the model server on its own (like tensorflow_model_server)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.errors import LiqiError, ModelLoadError
from liqi.logs.rotation import DEFAULT_BACKUPS, DEFAULT_MAX_MB, MAX_BACKUPS, LogLimits

LOAD_FAILURE_EXIT_CODE = 3  # --exit-on-load-failure: the first load or the warm-up failed

EPILOG = """\b
Examples:
  liqi serve ./models/mnist                 a SavedModel folder, or a folder of versions 1/, 2/...
  liqi serve oss://mybucket/models/ --name mnist --port 8501
  liqi serve model:mnist:3                  a registered model version (needs a profile)
  liqi serve ./model.onnx --max-batch-size 64
  liqi serve ./proc --processor python --processor-entry app.py   an EAS/allspark processor
  liqi serve ./models/mnist --warmup-file warmup.bin   replay requests before ready

\b
Then:
  curl http://127.0.0.1:8080/v1/models/mnist:predict -d '{"instances": [[0.0, ...]]}'
  curl http://127.0.0.1:8080/readyz
"""


@click.command(epilog=EPILOG)
@click.argument("uri", metavar="PATH_OR_URI")
@click.option("--name", help="Model name in URLs [default: from the path].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0 picks a free one; printed when ready).",
)
@click.option(
    "--processor",
    help="tensorflow, onnx, sklearn or python; EAS names such as "
    "tensorflow_cpu_1.x work too [default: detected from the files].",
)
@click.option(
    "--processor-path",
    help="python processor: the folder (or .py) with its code [default: PATH_OR_URI].",
)
@click.option("--processor-entry", help="python processor: app.py or app.py:MyProcessor.")
@click.option(
    "--worker-threads",
    type=click.IntRange(1, 256),
    help="python processor: calls at once [default: the processor's, else 5].",
)
@click.option(
    "--max-batch-size",
    default=256,
    show_default=True,
    type=click.IntRange(1),
    help="Most rows in one model call.",
)
@click.option(
    "--max-batch-wait-ms",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Wait up to this long to fill a batch (0: adaptive: "
    "never wait, batch whatever queued while the model was busy).",
)
@click.option(
    "--max-queue-size",
    default=1024,
    show_default=True,
    type=click.IntRange(1),
    help="Requests waiting per version before new ones get 503.",
)
@click.option(
    "--versions",
    "version_policy",
    default="latest",
    show_default=True,
    help="Which versions to serve: latest, latest:N, all, or 1,3.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="LABEL=VERSION",
    help="Version label (TF Serving /labels/<label>), e.g. stable=1 (repeatable).",
)
@click.option(
    "--poll-interval-s",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0),
    help="How often to look for new versions (0: never).",
)
@click.option(
    "--token",
    envvar="LIQI_SERVE_TOKEN",
    help="Require 'Authorization: <token>' "
    "(or the EAS SDK signature) on prediction routes [env: LIQI_SERVE_TOKEN].",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    envvar="LIQI_CORS_ORIGINS",
    help="Let web pages from this origin (e.g. http://127.0.0.1:8000; * for any) call the "
    "server from a browser. Repeat for several, or comma-separate [env: LIQI_CORS_ORIGINS].",
)
@click.option(
    "--max-body-mb",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Largest request body; bigger ones get 413.",
)
@click.option(
    "--request-timeout-s",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0.001),
    help="Requests waiting longer get 504.",
)
@click.option("--no-warmup", is_flag=True, help="Mark versions ready without a warm-up call.")
@click.option(
    "--warmup-file",
    type=click.Path(path_type=Path),
    help="Requests replayed (5 times each) before the server counts as ready: a .bin "
    "holding one serialized EAS PredictRequest (TFRequest.to_string()), or a .txt with one "
    "request body per line (custom processors, JSON). A failing one keeps it not ready.",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write all output (stdout and stderr, TensorFlow's too) to this file, rotated at "
    "--log-max-mb into FILE.1 ... FILE.N [default: stdout and stderr].",
)
@click.option(
    "--log-max-mb",
    type=click.FloatRange(0, min_open=True),
    default=DEFAULT_MAX_MB,
    show_default=True,
    envvar="LIQI_LOG_MAX_MB",
    help="--log-file: size at which the file rotates [env: LIQI_LOG_MAX_MB].",
)
@click.option(
    "--log-backups",
    type=click.IntRange(0, MAX_BACKUPS),
    default=DEFAULT_BACKUPS,
    show_default=True,
    envvar="LIQI_LOG_BACKUPS",
    help="--log-file: rotated files kept (N) [env: LIQI_LOG_BACKUPS].",
)
@click.option("--instance-id", hidden=True, help="A service instance's id (a marker).")
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    hidden=True,
    help="Write pid, url and state (listening, ready, failed, stopped) here, as JSON.",
)
@click.option(
    "--exit-on-load-failure",
    is_flag=True,
    hidden=True,
    help="Exit with code 3 when the first load or the warm-up fails (instead of staying up, "
    "not ready).",
)
@pass_cli
def serve(
    obj: CliContext,
    uri: str,
    name: str | None,
    host: str,
    port: int,
    processor: str | None,
    processor_path: str | None,
    processor_entry: str | None,
    worker_threads: int | None,
    max_batch_size: int,
    max_batch_wait_ms: float,
    max_queue_size: int,
    version_policy: str,
    labels: tuple[str, ...],
    poll_interval_s: float,
    token: str | None,
    cors_origins: tuple[str, ...],
    max_body_mb: int,
    request_timeout_s: float,
    no_warmup: bool,
    warmup_file: Path | None,
    log_file: Path | None,
    log_max_mb: float,
    log_backups: int,
    instance_id: str | None,
    state_file: Path | None,
    exit_on_load_failure: bool,
) -> None:
    """Serve a model over HTTP: EAS, TF Serving REST and KServe V2 on one port.

    PATH_OR_URI is a local folder or file, oss://bucket/prefix, or model:NAME[:VERSION].
    Ready (GET /readyz) once a version is loaded and answered a warm-up call (and the
    --warmup-file requests); SIGTERM finishes the requests in flight, then exits.
    TensorFlow's own log lines are hidden below errors (LIQI_TF_LOG_LEVEL, or liqi --debug).
    """
    from liqi.logs.capture import capture_output
    from liqi.logs.tensorflow_noise import quiet_tensorflow, tf_log_level

    if log_file is not None:
        try:
            capture_output(log_file, LogLimits.from_mb(log_max_mb, log_backups))
        except OSError as exc:
            message = f"Cannot write {log_file} through a log writer ({exc}); output stays here."
            click.echo(message, err=True)
    quiet_tensorflow(os.environ, tf_log_level(obj.environ, debug=obj.debug))  # before TF loads
    # Imported here: the serving stack (uvicorn, prometheus) stays out of other commands.
    from liqi._logging import configure_logging
    from liqi.asgi.cors import CorsPolicy
    from liqi.core.batching import BatchPolicy
    from liqi.core.version_policy import VersionPolicy, parse_labels
    from liqi.serving.app import ServeLimits
    from liqi.serving.manager import ModelOptions
    from liqi.serving.server import ProcessorOptions, ServeOptions, serve as run_server
    from liqi.serving.source import open_source
    from liqi.serving.state_file import ServerState, write_state

    configure_logging(logging.DEBUG if obj.debug else logging.INFO)
    options = ServeOptions(
        uri=uri,
        cache_dir=obj.liqi_home / "cache" / "models",
        name=name,
        host=host,
        port=port,
        processor=ProcessorOptions(
            name=processor,
            path=processor_path or (uri if processor_entry else None),
            entry=processor_entry,
            worker_threads=worker_threads,
        ),
        model=ModelOptions(
            policy=VersionPolicy.parse(version_policy),
            batching=BatchPolicy(
                max_batch_size=max_batch_size,
                max_batch_wait_s=max_batch_wait_ms / 1000,
                max_queue_size=max_queue_size,
            ),
            labels=parse_labels(",".join(labels)) if labels else {},
            warmup=not no_warmup,
        ),
        poll_interval_s=poll_interval_s,
        token=token,
        cors=CorsPolicy.parse(cors_origins),
        limits=ServeLimits(max_body_bytes=max_body_mb * 2**20, request_timeout_s=request_timeout_s),
        warmup_file=warmup_file,
        exit_on_load_failure=exit_on_load_failure,
        state_file=state_file,
        instance_id=instance_id,
    )
    try:
        try:
            source = open_source(uri, cache_dir=options.cache_dir, client_factory=obj.client)
            found = source.versions()  # fail fast on a wrong path, bucket or model name
        except LiqiError as exc:
            # With --exit-on-load-failure a source that cannot be listed is a failed load.
            raise ModelLoadError(exc.message) if exit_on_load_failure else exc from None
        listing = ", ".join(str(v) for v in sorted(found)) or "none yet"
        model_name = options.name or source.name
        click.echo(f"Loading {uri} as model {model_name} (versions found: {listing}) ...", err=True)
        run_server(options, source=source, announce=click.echo)
    except Exception as exc:
        message = exc.message if isinstance(exc, LiqiError) else f"{type(exc).__name__}: {exc}"
        load_failed = exit_on_load_failure and isinstance(exc, ModelLoadError)
        code = LOAD_FAILURE_EXIT_CODE if load_failed else getattr(exc, "exit_code", 1)
        write_state(state_file, ServerState(os.getpid(), "failed", reason=message, exit_code=code))
        if load_failed:
            raise _LoadFailed(message) from None
        raise


class _LoadFailed(click.ClickException):
    """``Error: <reason>`` on stderr, exit code 3."""

    exit_code = LOAD_FAILURE_EXIT_CODE
