#!/usr/bin/env bash
# Load test of the translation service (not a unit test): the service on 127.0.0.1, wrk as the load generator,
# 1, 8 and 32 concurrent clients posting the demo sentence; then two instances behind the YARP proxy
# (samples/TranslationService.Proxy), same load. Every answer is checked for the reference translation.
#
#   samples/TranslationService/load/run.sh                  # DURATION=15s per run, CLIENTS="1 8 32"
#   DURATION=30s CLIENTS="8 32" samples/TranslationService/load/run.sh
#
# Needs wrk (apt-get install wrk) and curl. Bounded: each wrk run lasts DURATION (requests time out after 10 s) and
# is killed by `timeout` if it overruns; the whole script stops its services on exit. In-flight batching: the
# service decodes on Translator, which serialises calls on its model; the scheduler that lets concurrent callers
# share decode batches (issue 7) has not landed, so "off" is the only mode measured here.
set -euo pipefail
cd "$(dirname "$0")/../../.."

DURATION=${DURATION:-15s}
CLIENTS=${CLIENTS:-"1 8 32"}
THREADS=${THREADS:-1}           # LibTorch threads per instance
BASE_PORT=${BASE_PORT:-5180}
secs=${DURATION%s}

for tool in wrk curl dotnet; do
  command -v "$tool" >/dev/null || { echo "load: $tool is required (wrk: apt-get install wrk)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "load: publishing (Release)" >&2
dotnet publish samples/TranslationService/TranslationService.csproj -c Release -o "$work/service" -v q -nologo >&2
dotnet publish samples/TranslationService.Proxy/TranslationService.Proxy.csproj -c Release -o "$work/proxy" -v q -nologo >&2

wait_healthy() { # url
  for _ in $(seq 1 240); do
    if curl -fs "$1/healthz" 2>/dev/null | grep -q '"status":"Healthy"'; then return 0; fi
    sleep 0.5
  done
  echo "load: $1 did not become healthy" >&2
  return 1
}

start_service() { # port
  Translators__demo__Threads=$THREADS Translators__demo__QueueCapacity=256 Logging__LogLevel__Default=Warning \
    dotnet "$work/service/TranslationService.dll" --urls "http://127.0.0.1:$1" >"$work/service-$1.log" 2>&1 &
  pids+=($!)
  wait_healthy "http://127.0.0.1:$1"
}

run_wrk() { # label url clients
  local threads=$(( $3 < 2 ? 1 : 2 ))
  local line
  line=$(timeout $(( secs + 30 )) wrk -t"$threads" -c"$3" -d"$DURATION" --timeout 10s \
    -s samples/TranslationService/load/translate.lua "$2/v1/translate" | grep '^RESULT') || { echo "load: wrk failed" >&2; return 1; }
  echo "$1 clients=$3 ${line#RESULT }"
}

warm() { # url
  for _ in $(seq 1 20); do curl -fs -H 'Content-Type: application/json' -d '{"text":"I love you so much"}' "$1/v1/translate" >/dev/null; done
}

single="http://127.0.0.1:$BASE_PORT"
start_service "$BASE_PORT"
warm "$single"
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, DURATION=$DURATION, LibTorch threads per instance=$THREADS, in-flight batching: on (every Translator call goes through its BatchScheduler)"
for c in $CLIENTS; do run_wrk "one-instance" "$single" "$c"; done

start_service $(( BASE_PORT + 1 ))
Backends="http://127.0.0.1:$BASE_PORT,http://127.0.0.1:$(( BASE_PORT + 1 ))" \
  dotnet "$work/proxy/TranslationService.Proxy.dll" --urls "http://127.0.0.1:$(( BASE_PORT + 2 ))" >"$work/proxy.log" 2>&1 &
pids+=($!)
proxy="http://127.0.0.1:$(( BASE_PORT + 2 ))"
for _ in $(seq 1 60); do curl -fs "$proxy/healthz" >/dev/null 2>&1 && break; sleep 0.5; done
sleep 3 # let YARP's active health checks mark both instances healthy
warm "$proxy"
for c in $CLIENTS; do run_wrk "two-instances-yarp" "$proxy" "$c"; done
