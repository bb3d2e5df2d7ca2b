"""A real S3 server for tests: moto's server in a thread on a free loopback port."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import httpx
from moto.server import ThreadedMotoServer

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1, port 0; yield its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint_url = f"http://{host}:{port}"
        wait_ready(endpoint_url)
        yield endpoint_url
    finally:
        server.stop()


def wait_ready(endpoint_url: str, timeout_s: float = 30.0) -> None:
    """Poll the server until it answers, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{endpoint_url}/moto-api/", timeout=2.0, trust_env=False).is_success:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"moto S3 server at {endpoint_url} not ready after {timeout_s}s")
        time.sleep(0.05)


@functools.cache
def s3_client(endpoint_url: str) -> Any:
    """A boto3 client for the server (made once: clients are thread-safe and slow to make)."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def create_bucket(endpoint_url: str, name: str | None = None) -> str:
    """Create a bucket (a fresh unique name unless given) and return its name."""
    name = name or f"liqi-test-{uuid.uuid4().hex[:16]}"
    s3_client(endpoint_url).create_bucket(Bucket=name)
    return name


def remove_bucket(endpoint_url: str, name: str) -> None:
    """Delete every object, every unfinished upload and the bucket itself."""
    client = s3_client(endpoint_url)
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


def unfinished_uploads(endpoint_url: str, bucket: str) -> list[str]:
    """Keys of the multipart uploads started and neither completed nor aborted."""
    uploads = s3_client(endpoint_url).list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return [str(upload["Key"]) for upload in uploads]
