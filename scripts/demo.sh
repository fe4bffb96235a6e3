#!/usr/bin/env bash
# Runs Switchyard on its embedded default (deploy/local manifests) in front of the bundled
# switchyard-mock provider, shows real requests through it, then keeps serving until Ctrl-C.
# DEMO_EXIT=1 stops after the tour (used by tests).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/debug}
MOCK_ADDR=127.0.0.1:8000          # deploy/local/backends.yaml points here
GW=${GW:-127.0.0.1:8080}
ADMIN=${ADMIN:-127.0.0.1:9090}
export MOCK_API_KEY=${MOCK_API_KEY:-sk-mock-local}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

for addr in "$MOCK_ADDR" "$GW" "$ADMIN"; do
  if (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; then
    echo "port ${addr} is already in use: stop whatever listens there and retry" >&2; exit 1
  fi
done

"$BIN/switchyard-mock" --listen "$MOCK_ADDR" --api-key "$MOCK_API_KEY" --chunks 8 --chunk-delay-ms 60 &
pids+=($!)
# deploy/local has no AIConsumer: serve without keys, explicitly (the default is closed).
"$BIN/switchyard" serve --config deploy/local --listen "$GW" --admin-listen "$ADMIN" --require-auth=false &
pids+=($!)

for _ in $(seq 1 100); do
  curl -fsS "http://$ADMIN/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://$ADMIN/readyz" >/dev/null || { echo "gateway did not become ready" >&2; exit 1; }

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "$2"; }

step "Models the gateway serves" "curl http://$GW/v1/models"
curl -fsS "http://$GW/v1/models"; echo

step "A chat completion: gpt-4o-mini is routed to the mock's mock-model" \
  "curl http://$GW/v1/chat/completions -d '{\"model\":\"gpt-4o-mini\",...}'"
curl -fsS "http://$GW/v1/chat/completions" -H 'content-type: application/json' \
  -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello, Switchyard!"}]}'; echo

step "The same, streamed: each SSE chunk is relayed as it arrives" \
  "curl -N http://$GW/v1/chat/completions -d '{\"model\":\"gpt-4o-mini\",\"stream\":true,...}'"
curl -fsSN "http://$GW/v1/chat/completions" -H 'content-type: application/json' \
  -d '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello, Switchyard!"}]}'

step "An unknown model gets an OpenAI-shaped 404" "curl http://$GW/v1/chat/completions -d '{\"model\":\"nope\",...}'"
curl -sS "http://$GW/v1/chat/completions" -d '{"model":"nope","messages":[]}'; echo

step "Metrics on the admin port" "curl http://$ADMIN/metrics | grep switchyard_"
curl -fsS "http://$ADMIN/metrics" | grep -E '^switchyard_(requests_total|tokens_total|spend_usd_total)' || true

if [[ "${DEMO_EXIT:-0}" == "1" ]]; then exit 0; fi
printf '\nSwitchyard is serving on http://%s/v1 (admin http://%s). Edit deploy/local/*.yaml to reload live. Ctrl-C to stop.\n' "$GW" "$ADMIN"
wait
