"""JS client overhead: starts `liqi serve` of the exported MNIST model (a subprocess, as
benchmarks/clients.py does) and runs benchmarks/clients_js.mjs against it, which compares the
JS `PredictClient.predict` in a loop with a raw `fetch` of the same body.

Target (issue 8): PredictClient / raw fetch >= 0.9, for EAS protobuf and TF Serving JSON.
Needs Node >= 18 and the built client (`cd clients/js && npm run build`).

Run: .venv/bin/python benchmarks/clients_js.py [--model EXPORT/1] [--seconds 2] [--rounds 5]
     [--out FILE]   (appends the Markdown section to that file)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.clients import serve_mnist  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "clients_js.mjs"
BUILT = ROOT / "clients" / "js" / "dist" / "index.js"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, help="A SavedModel version folder (else exported)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per round and loop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="append the Markdown section to this file")
    parser.add_argument("--node", default=shutil.which("node") or "node", help="Node >= 18")
    args = parser.parse_args()
    if not BUILT.is_file():
        sys.exit(f"{BUILT} is missing: build the client first (cd clients/js && npm run build).")
    with serve_mnist(args.model) as server:
        node = [args.node, str(SCRIPT), "--endpoint", server.url]
        node += ["--seconds", f"{args.seconds:g}", "--rounds", str(args.rounds)]
        if args.out is not None:
            node += ["--out", str(args.out.resolve())]
        done = subprocess.run(node, cwd=ROOT, check=False)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
