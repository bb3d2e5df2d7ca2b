"""Predict digits for the first MNIST test images with liqi's Python client, through a
service's gateway, and print them next to their labels.

    python examples/mnist/clients/python_sdk.py --endpoint http://127.0.0.1:8080 \\
        --service mnist_saved_model_example [--token T] [--protocol eas|tfserving|v2] [--count 5]

--endpoint is the liqi server (`liqi eas desc NAME` prints the service's endpoint
http://<server>/api/predict/NAME); --token is the service's (`liqi eas token NAME`), if it has
one. Each flag can come from the environment instead: LIQI_ENDPOINT, LIQI_SERVICE, LIQI_TOKEN,
LIQI_PROTOCOL, LIQI_COUNT. The defaults call the service `liqi quickstart` deploys.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from liqi import PredictClient
from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from liqi.errors import LiqiError


def main() -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint", default=env("LIQI_ENDPOINT", "http://127.0.0.1:8080"))
    parser.add_argument("--service", default=env("LIQI_SERVICE", "mnist_saved_model_example"))
    parser.add_argument("--token", default=env("LIQI_TOKEN"))
    parser.add_argument(
        "--protocol", default=env("LIQI_PROTOCOL", "eas"), choices=["eas", "tfserving", "v2"]
    )
    parser.add_argument("--count", type=int, default=int(env("LIQI_COUNT", "5")))
    args = parser.parse_args()

    test = read_data_sets(str(builtin_dir())).test  # pixels in [0, 1], rows of 784
    images, labels = test.images[: args.count], test.labels[: args.count]

    # The service's endpoint (`liqi eas desc` prints it) takes all three protocols.
    endpoint = f"{args.endpoint.rstrip('/')}/api/predict/{args.service}"
    with PredictClient(endpoint, args.service, token=args.token, protocol=args.protocol) as client:
        scores = client.predict({"images": images})["scores"]  # [count, 10]
    predicted = scores.argmax(axis=1)

    for i, (digit, label) in enumerate(zip(predicted, labels, strict=True)):
        print(f"image {i}: predicted {digit}, label {label}")
    right = int(np.sum(predicted == labels))
    print(f"accuracy: {right}/{len(labels)} = {right / len(labels):.2f}")


if __name__ == "__main__":
    try:
        main()
    except LiqiError as exc:  # a clear message (wrong token, unknown service ...), no traceback
        sys.exit(f"{type(exc).__name__}: {exc}")
