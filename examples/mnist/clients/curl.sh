#!/usr/bin/env bash
# Call a liqi MNIST service with curl, through the gateway of the liqi server:
#
#   1. GET  <endpoint>/api/predict/<service>                           the model's signature
#   2. POST <endpoint>/api/predict/<service>/v1/models/<service>:predict  TF Serving JSON: one
#      image made here (a "1": a vertical stroke), answered with {"predictions": [[10 scores]]}
#   3. with --body FILE: POST FILE to <endpoint>/api/predict/<service>, the EAS route: FILE is
#      a serialized tensorflow.eas.PredictRequest (TFRequest.to_string() of an EAS SDK, or a
#      warm-up .bin); the PredictResponse is saved to --answer FILE (default answer.pb).
#
#   bash examples/mnist/clients/curl.sh --endpoint http://127.0.0.1:8080 \
#       --service mnist_saved_model_example [--token T] [--body request.pb [--answer answer.pb]]
#
# --token is the service's (`liqi eas token NAME`), sent as `Authorization: <token>`. Each flag
# can come from the environment instead: LIQI_ENDPOINT, LIQI_SERVICE, LIQI_TOKEN. The defaults
# call the service `liqi quickstart` deploys.
set -euo pipefail

endpoint="${LIQI_ENDPOINT:-http://127.0.0.1:8080}"
service="${LIQI_SERVICE:-mnist_saved_model_example}"
token="${LIQI_TOKEN:-}"
body=""
answer="answer.pb"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --endpoint) endpoint="$2" ;;
    --service) service="$2" ;;
    --token) token="$2" ;;
    --body) body="$2" ;;
    --answer) answer="$2" ;;
    *) echo "unknown argument '$1'; see the top of $0" >&2; exit 2 ;;
  esac
  shift 2
done

gateway="${endpoint%/}/api/predict/${service}"
headers=()
if [[ -n "$token" ]]; then headers=(-H "Authorization: ${token}"); fi
# -sS: no progress bar, but errors; --fail-with-body (curl >= 7.76): exit non-zero on an HTTP
# error, printing the server's message.
call() { curl -sS --fail-with-body ${headers[@]+"${headers[@]}"} "$@"; }

echo "== GET ${gateway}"
call "${gateway}"
echo

# 784 pixels in [0, 1], row by row: columns 13 and 14 of rows 4 to 23 are ink.
pixels=""
for ((i = 0; i < 784; i++)); do
  row=$((i / 28)) col=$((i % 28))
  if ((row >= 4 && row <= 23 && col >= 13 && col <= 14)); then pixel=1.0; else pixel=0; fi
  pixels+="${pixels:+,}${pixel}"
done
echo "== POST ${gateway}/v1/models/${service}:predict"
call -H "Content-Type: application/json" \
  --data "{\"instances\": [[${pixels}]]}" \
  "${gateway}/v1/models/${service}:predict"
echo

if [[ -n "$body" ]]; then
  echo "== POST ${gateway} (${body})"
  if ! call -H "Content-Type: application/octet-stream" --data-binary "@${body}" \
    -o "${answer}" "${gateway}"; then
    cat "${answer}" >&2 # the server's error message
    exit 1
  fi
  echo "saved the PredictResponse ($(($(wc -c <"${answer}"))) bytes) to ${answer}"
fi
