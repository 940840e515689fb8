#!/usr/bin/env bash
# A real FedFace deployment on one machine (docs/federated.md, "A real deployment"): SuperLink + 3 SuperNodes on
# 127.0.0.1, TLS + SuperNode authentication (the defaults), DP sigma=1 C=1, node 2 killed (SIGTERM) once round 2
# is printed. Usage: docs/fed_deploy.sh OUT [PORT]   (run from the repository root; telemetry off; no Ray)
set -u
OUT=${1:?usage: docs/fed_deploy.sh OUT [PORT]}
PORT=${2:-9392}
DATA=${DATA:-../shared/datakit/celeba_subset_aligned112}
FP=${FP:-faceprivacy}
export FLWR_TELEMETRY_ENABLED=0
mkdir -p "$OUT/logs"
$FP fed-server --port "$PORT" --rounds 6 --min-nodes 2 --create-node-keys 3 --backbone dlib-level0 \
    --data "$DATA" --out "$OUT" --round-timeout 240 --run-timeout 2400 --dp-clip 1 --dp-noise 1 \
    > "$OUT/logs/server.txt" 2>&1 &
SRV=$!
for _ in $(seq 600); do
    # the nodes start once the SuperLink runs and their keys are registered (before that: "Failed to activate")
    grep -q "^SuperLink on" "$OUT/logs/server.txt" 2>/dev/null && break
    kill -0 "$SRV" 2>/dev/null || { echo "[script] fed-server ended early:"; cat "$OUT/logs/server.txt"; exit 1; }
    sleep 1
done
PIDS=()
for i in 0 1 2; do
    $FP fed-client --superlink "127.0.0.1:$PORT" --partition-id "$i" --data "$DATA" \
        --root-certificates "$OUT/flower/tls/ca.crt" --auth-key "$OUT/node_keys/node$i" --max-wait 30 \
        > "$OUT/logs/client$i.txt" 2>&1 &
    PIDS+=($!)
done
# kill node 2 once round 2 is reported
for _ in $(seq 2400); do
    grep -q "^round 2/" "$OUT/logs/server.txt" 2>/dev/null && break
    kill -0 "$SRV" 2>/dev/null || break
    sleep 1
done
kill -TERM "${PIDS[2]}" && echo "[script] node 2 (fed-client pid ${PIDS[2]}) killed with SIGTERM after round 2"
wait "$SRV"; echo "[script] fed-server exit code $?"
for i in 0 1; do
    if wait "${PIDS[$i]}"; then rc=0; else rc=$?; fi
    echo "[script] fed-client $i exit code $rc"
done
echo "[script] server terminal:"; cat "$OUT/logs/server.txt"
echo "[script] last lines of client 0:"; tail -n 3 "$OUT/logs/client0.txt"
if ss -ltn 2>/dev/null | grep -q ":$PORT "; then echo "[script] port $PORT still in use"; else echo "[script] port $PORT free"; fi
