#!/usr/bin/env bash
# End-to-end: the seed's pipeline with sml in place of the ESP.
#   simulated SX631 meter on a pty -> sml run meters/sx631.sml -> mosquitto -> mqttwarn -> InfluxDB
# Passes when InfluxDB returns volts_l1, enrg_imp and the monthly values equal to the telegram's,
# and when sml's own InfluxDB sink (--influx, database `direct`) holds the very same numbers as the
# mqttwarn path (database `iot`) for every field.
# Needs: mosquitto, influxd/influx (Debian 'influxdb', 'influxdb-client'), mqttwarn (PyPI); .ci/run
# installs them. Usage: tests/e2e/run.sh [path/to/sml]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
sml=${1:-$root/target/debug/sml}
capture=$root/tests/fixtures/meters/sx631.txt
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${E2E_KEEP:-}" = 1 ]; then echo "e2e: logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { echo "e2e: FAIL: $*"; for f in "$work"/*.log; do echo "== $f"; tail -n 30 "$f"; done; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
broker_port=$(free_port); influx_port=$(free_port); influx_rpc=$(free_port)

# InfluxDB 1.x, started by hand with its own dirs.
mkdir -p "$work/influx"/{meta,data,wal}
cat > "$work/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$influx_rpc"
[meta]
  dir = "$work/influx/meta"
[data]
  dir = "$work/influx/data"
  wal-dir = "$work/influx/wal"
[http]
  bind-address = "127.0.0.1:$influx_port"
  log-enabled = false
CONF
influxd -config "$work/influxdb.conf" > "$work/influxd.log" 2>&1 & pids+=($!)

printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$broker_port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 & pids+=($!)

for _ in $(seq 1 100); do influx -port "$influx_port" -execute 'SHOW DATABASES' >/dev/null 2>&1 && break; sleep 0.2; done
influx -port "$influx_port" -execute 'CREATE DATABASE iot' || fail "InfluxDB did not start"
influx -port "$influx_port" -execute 'CREATE DATABASE direct' || fail "InfluxDB did not start"

sed -e "s/@BROKER_PORT@/$broker_port/" -e "s/@INFLUX_PORT@/$influx_port/" "$root/tests/e2e/mqttwarn.ini" > "$work/mqttwarn.ini"
(cd "$work" && MQTTWARNINI="$work/mqttwarn.ini" exec "${MQTTWARN:-mqttwarn}" > "$work/mqttwarn.log" 2>&1) & pids+=($!)

python3 "$root/tests/e2e/fake_meter.py" "$capture" "$work/pty" --baud 115200 --period 1 > "$work/meter.log" 2>&1 & pids+=($!)
for _ in $(seq 1 50); do [ -f "$work/pty" ] && break; sleep 0.1; done
[ -f "$work/pty" ] || fail "the simulated meter did not start"

"$sml" run "$root/meters/sx631.sml" --port "1=$(cat "$work/pty")" \
  --broker "mqtt://127.0.0.1:$broker_port" --topic myelectricmeter --full-topic 'home1/%prefix%/%topic%/' \
  --every-telegram --influx "http://127.0.0.1:$influx_port" --influx-db direct \
  > "$work/sml.log" 2>&1 & pids+=($!)

query='SELECT last(volts_l1) AS volts_l1, last(enrg_imp) AS enrg_imp, last(mo_enrg_imp) AS mo_enrg_imp, last(mo_pw_pk_ex_l3) AS mo_pw_pk_ex_l3, last(mo_nrg_reac_sum) AS mo_nrg_reac_sum FROM electricmeter'
for _ in $(seq 1 60); do
  out=$(influx -port "$influx_port" -database iot -format json -execute "$query" 2>/dev/null || true)
  case "$out" in *volts_l1*) break ;; esac
  sleep 1
done
echo "e2e: InfluxDB answered: $out"
python3 - "$capture" "$out" <<'PY' || fail "values in InfluxDB differ from the telegram"
import json, re, sys
telegram = open(sys.argv[1], encoding="ascii", errors="replace").read()
def bracket(code, n):
    line = next(l for l in telegram.splitlines() if l.startswith(code + "("))
    return float(re.findall(r"\(([^)]*)\)", line)[n].split("*")[0])
want = {
    "volts_l1": bracket("1-0:32.7.0", 0),
    "enrg_imp": bracket("1-0:1.8.0", 0),
    "mo_enrg_imp": bracket("0-0:98.1.0", 1),
    "mo_pw_pk_ex_l3": bracket("0-0:98.1.0", 19),
    "mo_nrg_reac_sum": bracket("0-0:98.1.0", 13),
}
res = json.loads(sys.argv[2])["results"][0]["series"][0]
got = dict(zip(res["columns"], res["values"][0]))
bad = {k: (v, got.get(k)) for k, v in want.items() if got.get(k) is None or abs(got[k] - v) > 1e-9}
print("e2e: expected", want)
if bad:
    print("e2e: mismatches (want, got):", bad)
    sys.exit(1)
PY

# Both paths, written at once: every field mqttwarn wrote has the same value in sml's own points.
# sml's own sink writes in batches (up to 1 s apart), so its first points may trail mqttwarn's a little.
for _ in $(seq 1 30); do
  direct=$(influx -port "$influx_port" -database direct -format json -execute 'SELECT last(*) FROM "EON"' 2>/dev/null || true)
  case "$direct" in *series*) break ;; esac
  sleep 1
done
mqttwarn_all=$(influx -port "$influx_port" -database iot -format json -execute 'SELECT last(*) FROM electricmeter' 2>/dev/null || true)
python3 - "$mqttwarn_all" "$direct" <<'PY' || fail "--influx and mqttwarn wrote different numbers"
import json, sys
def last(text):
    s = json.loads(text)["results"][0]["series"][0]
    return {k.removeprefix("last_"): v for k, v in zip(s["columns"], s["values"][0]) if k != "time"}
via_mqttwarn, direct = last(sys.argv[1]), last(sys.argv[2])
assert len(via_mqttwarn) >= 40, via_mqttwarn
diff = {k: (v, direct.get(k)) for k, v in via_mqttwarn.items()
        if not isinstance(direct.get(k), (int, float)) or abs(float(direct[k]) - float(v)) > 1e-9}
print(f"e2e: {len(via_mqttwarn)} fields compared between mqttwarn and --influx")
if diff:
    print("e2e: differences (mqttwarn, --influx):", diff)
    sys.exit(1)
print("e2e: 2 passed, 0 failed")
PY
