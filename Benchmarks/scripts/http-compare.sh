#!/usr/bin/env bash
# Real HTTP, same run, same server (issue 16's last target): hey, plain AsyncHTTPClient, the library's
# HTTP factory + round robin `call`, the same through `Retry`, and `lbctl bench`, interleaved over
# rounds against one nginx on 127.0.0.1, reported as a markdown table with the targets' ratios.
#
#   Benchmarks/scripts/http-compare.sh [--rounds N (2)] [--seconds S (6)] [--concurrency C (16)]
#                                      [--nginx-workers N|auto (1)] [--no-build] [--no-install]
#
# It installs nginx and hey with apt-get when they are missing (wrk when hey cannot be installed: the
# load generator's column is then labelled wrk, and the 0.4x target, which is against hey, is not
# judged), builds http-compare (Benchmarks package) and lbctl (main package) in release, starts a
# private nginx on a free port of its own (its own config and temporary directory, `return 200 "ok"`),
# runs Benchmarks/Sources/http-compare, and stops nginx on exit.
#
# nginx runs ONE worker by default (--nginx-workers): on this machine's kind (2 cores) one worker serves
# `return 200` far faster than any client measured here (wrk -t1 reached 175k requests/s against it),
# and it keeps the server to one core, so the client under test always has the other one and the split
# of the cores does not depend on how the scheduler places two workers beside the client's threads.
# Keep-alive connections are not closed after nginx's default 1000 requests (keepalive_requests), so
# every client measures requests on its pool, not reconnections.
set -euo pipefail

rounds=2
seconds=6
concurrency=16
workers=1
build=1
install=1
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --concurrency) concurrency="$2"; shift 2 ;;
        --nginx-workers) workers="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        --no-install) install=0; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "http-compare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$workers" in auto|[1-9]|[1-9][0-9]) ;; *) echo "http-compare.sh: --nginx-workers takes a number or auto" >&2; exit 2 ;; esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
benchmarks="$(cd "$here/.." && pwd)"

# --- Tools -------------------------------------------------------------------------------------------
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
apt_install() {
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "$@" >/dev/null
}
nginx_bin="$(command -v nginx || true)"
[ -n "$nginx_bin" ] || nginx_bin="$(ls /usr/sbin/nginx 2>/dev/null || true)"
if [ -z "$nginx_bin" ] && [ "$install" -eq 1 ]; then
    echo "installing nginx (apt-get)..."
    # The Debian package may try to start the system's nginx on port 80: that one is not ours and is left as it is.
    apt_install nginx || { "${sudo_cmd[@]}" apt-get update >/dev/null && apt_install nginx; }
    nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
fi
[ -x "$nginx_bin" ] || { echo "http-compare.sh: nginx is missing (apt-get install nginx)" >&2; exit 1; }

load=(--hey "$(command -v hey || true)")
if [ -z "${load[1]}" ] && [ "$install" -eq 1 ]; then
    echo "installing hey (apt-get)..."
    apt_install hey || { "${sudo_cmd[@]}" apt-get update >/dev/null && apt_install hey; } || true
    load=(--hey "$(command -v hey || true)")
fi
if [ -z "${load[1]}" ]; then
    echo "http-compare.sh: hey is not available from apt here; using wrk instead (labelled wrk)" >&2
    command -v wrk >/dev/null || { [ "$install" -eq 1 ] && apt_install wrk; } || true
    load=(--wrk "$(command -v wrk || true)")
    [ -n "${load[1]}" ] || { echo "http-compare.sh: neither hey nor wrk is available" >&2; exit 1; }
fi

# --- Build -------------------------------------------------------------------------------------------
# lbctl is the main package's (this checkout's Sources/lbctl, the Benchmarks package's path dependency),
# built through the Benchmarks package so that it shares one build of NIO, AsyncHTTPClient and the library
# with http-compare (a second release build of them in the main package's .build takes another ~15 min here).
if [ "$build" -eq 1 ]; then
    echo "building http-compare and lbctl (release)..."
    swift build -c release --package-path "$benchmarks" --product http-compare -Xswiftc -warnings-as-errors
    swift build -c release --package-path "$benchmarks" --product lbctl -Xswiftc -warnings-as-errors
fi
bin="$(swift build -c release --package-path "$benchmarks" --show-bin-path)"
runner="$bin/http-compare"
lbctl="$bin/lbctl"
[ -x "$runner" ] || { echo "http-compare.sh: $runner is not built" >&2; exit 1; }
[ -x "$lbctl" ] || { echo "http-compare.sh: $lbctl is not built" >&2; exit 1; }

# --- nginx -------------------------------------------------------------------------------------------
dir="$(mktemp -d /tmp/http-compare.XXXXXX)"
nginx_pid=""
stop() {
    if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
        kill -TERM "$nginx_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$nginx_pid" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$nginx_pid" 2>/dev/null || true
        wait "$nginx_pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

# Whether a TCP port is listened on (IPv4 or IPv6), from /proc/net.
listening() {
    local hex
    hex="$(printf '%04X' "$1")"
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }'
}

# Starts nginx on port $1; succeeds once it has bound the port (nginx writes its pid file after binding).
start_nginx() {
    local port="$1"
    rm -f "$dir/nginx.pid"
    cat > "$dir/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$port;
        location / { return 200 "ok"; }
    }
}
EOF
    "$nginx_bin" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" &
    nginx_pid=$!
    # Bounded: nginx retries a busy port for about 2.5 s, then exits.
    for _ in $(seq 1 200); do
        if ! kill -0 "$nginx_pid" 2>/dev/null; then wait "$nginx_pid" 2>/dev/null || true; nginx_pid=""; return 1; fi
        if [ -s "$dir/nginx.pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    kill -TERM "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true; nginx_pid=""
    return 1
}

port=""
for _ in $(seq 1 20); do
    candidate=$((20000 + RANDOM % 40000))
    listening "$candidate" && continue
    if start_nginx "$candidate"; then port="$candidate"; break; fi
done
[ -n "$port" ] || { echo "http-compare.sh: could not start nginx on a free port; its log:" >&2; cat "$dir/error.log" >&2 || true; exit 1; }
echo "nginx $("$nginx_bin" -v 2>&1 | sed 's/.*\///') on 127.0.0.1:$port, worker_processes $workers (pid $nginx_pid); ${load[0]#--} at ${load[1]}"

"$runner" --port "$port" "${load[@]}" --lbctl "$lbctl" --rounds "$rounds" --seconds "$seconds" \
    --concurrency "$concurrency" --work-dir "$dir"
