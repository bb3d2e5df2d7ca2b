"""The EAS Python SDK's README example, run against a liqi service: predict the first MNIST test
images and print the digits next to their labels.

    pip install eas-prediction        # or: scripts/eas-sdk-venv, which makes .venv-eas/
    python examples/mnist/clients/eas_sdk_predict.py --endpoint http://127.0.0.1:8080 \\
        --service mnist_saved_model_example [--token T] [--count 5] [--liqi]

Code written for PAI-EAS runs unchanged: --endpoint is the liqi server where EAS had its
gateway (http://<id>.<region>.pai-eas.aliyuncs.com); the SDK sends its requests to
<endpoint>/api/predict/<service>, which is the service's endpoint on liqi too (`liqi eas desc
NAME` prints it, `liqi eas token NAME` the token). The SDK needs an http:// endpoint or a
bare host:port.

Porting to liqi's own client is a one-line change, the import:

    from eas_prediction import PredictClient, TFRequest   # the EAS SDK
    from liqi import PredictClient, TFRequest             # liqi (what --liqi does)

Only numpy and the standard library are needed besides the SDK: the images are read from
the MNIST IDX files of this repository (src/liqi/datasets/mnist/test) or of --data DIR. Each
flag can come from the environment instead: LIQI_ENDPOINT, LIQI_SERVICE, LIQI_TOKEN,
LIQI_COUNT.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
from pathlib import Path

import numpy as np

if "--liqi" in sys.argv:
    from liqi import PredictClient, TFRequest
else:
    from eas_prediction import PredictClient, TFRequest  # type: ignore[import-not-found,no-redef]

MNIST_TEST = Path(__file__).resolve().parents[3] / "src" / "liqi" / "datasets" / "mnist" / "test"


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format): magic 0 0 8 <ndim>, big-endian uint32 sizes, bytes."""
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = np.frombuffer(data, ">u4", count=ndim, offset=4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint", default=env("LIQI_ENDPOINT", "http://127.0.0.1:8080"))
    parser.add_argument("--service", default=env("LIQI_SERVICE", "mnist_saved_model_example"))
    parser.add_argument("--token", default=env("LIQI_TOKEN"))
    parser.add_argument("--count", type=int, default=int(env("LIQI_COUNT", "5")))
    parser.add_argument("--data", type=Path, default=MNIST_TEST, help="holds t10k-*-idx*.gz")
    parser.add_argument("--liqi", action="store_true", help="use liqi's client, not the SDK")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    images = read_idx(args.data / "t10k-images-idx3-ubyte.gz")[: args.count] / 255
    labels = read_idx(args.data / "t10k-labels-idx1-ubyte.gz")[: args.count]

    client = PredictClient(args.endpoint, args.service)
    if args.token:
        client.set_token(args.token)
    client.init()

    right = 0
    for i, image in enumerate(images):
        req = TFRequest("serving_default")
        req.add_feed("images", [1, 784], TFRequest.DT_FLOAT, image.ravel().tolist())
        req.add_fetch("scores")
        resp = client.predict(req)
        digit = int(np.argmax(resp.get_values("scores")))
        right += int(digit == labels[i])
        print(f"image {i}: predicted {digit}, label {labels[i]}")
    print(f"accuracy: {right}/{len(labels)} = {right / len(labels):.2f}")
