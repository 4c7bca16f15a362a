#!/usr/bin/env bash
# Container smoke test: build the Dockerfile with buildah on a locally debootstrapped Debian base
# image (no registry is reachable here), run it with podman, and drive it end to end:
#   /readyz, HEALTHCHECK, create a sandbox and a preview through the API, fetch the preview from
#   a loopback upstream, then SIGTERM and require exit code 0.
#
# usage: ci/container-smoke.sh            (run as root; installs buildah/podman/runc/debootstrap)
# env:   SUITE=bookworm|trixie            Debian suite of the base image (Python 3.11 | 3.13)
#        CACHE_DIR=/var/cache/preview-gateway-ci   lock, .deb cache, logs (never the work tree)
#        IMAGE=localhost/preview-gateway:ci-smoke  the image built and tested
#        KEEP_IMAGE=1                     0 removes the app image (not the base) at the end
#
# The base image is built once per machine, suite and host CA set (about 60 s), and kept in
# podman's storage; buildah's layer cache keeps dependency installs until pyproject.toml changes.
# Pitfalls of this sandbox handled here (shared/design/container-build.md): crun fails on hybrid
# cgroups (runc instead), no CAP_SYS_RESOURCE (explicit ulimits), TLS-intercepting egress (the
# host's extra CAs go into the base image), HEALTHCHECK needs --format docker.
set -euo pipefail

SUITE=${SUITE:-bookworm}
CACHE_DIR=${CACHE_DIR:-/var/cache/preview-gateway-ci}
IMAGE=${IMAGE:-localhost/preview-gateway:ci-smoke}
BUILDER_IMAGE=${IMAGE}-builder
KEEP_IMAGE=${KEEP_IMAGE:-1}
BASE_IMAGE=localhost/preview-gateway-base:$SUITE
BASE_RECIPE=2   # bump to force a rebuild of the base image when the recipe below changes
API_KEY="ci:smoke-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
CONTEXT=$(cd "$(dirname "$0")/.." && pwd)
NAME=pgw-smoke-$$
declare -a TIMINGS=()

now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
secs() { local ms=$(($(now_ms) - $1)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
T0=$(now_ms)
log() { printf '[container-smoke %6ss] %s\n' "$(secs "$T0")" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
phase_start() { PHASE_T=$(now_ms); log "== $1"; }
phase_end() { TIMINGS+=("$(printf '%-22s %6ss' "$1" "$(secs "$PHASE_T")")"); }

[ "$(id -u)" = 0 ] || fail "must run as root (rootful podman and debootstrap)"
mkdir -p "$CACHE_DIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgw-smoke.XXXXXX")
UPSTREAM_PID=

cleanup() {
    local rc=$?
    if [ "$rc" != 0 ] && podman container exists "$NAME" 2>/dev/null; then
        log "container logs (last 40 lines):"
        podman logs --tail 40 "$NAME" >&2 2>&1 || true
    fi
    if [ "$rc" != 0 ] && [ -s "$WORK/podman.log" ]; then
        log "podman stderr:"; grep -v 'systemd' "$WORK/podman.log" >&2 || true
    fi
    podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
    if [ -n "$UPSTREAM_PID" ]; then kill "$UPSTREAM_PID" 2>/dev/null || true; fi
    if [ "$KEEP_IMAGE" = 0 ]; then podman rmi -f "$IMAGE" "$BUILDER_IMAGE" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
    if [ "$rc" = 0 ]; then log "PASS: container smoke test passed"; else log "FAILED (exit $rc)"; fi
}
trap cleanup EXIT

# ── tools ───────────────────────────────────────────────────────────────────────────────────
phase_start "tools"
missing=()
for tool in buildah podman runc debootstrap curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq buildah podman runc debootstrap curl >/dev/null
fi
phase_end tools

# No CAP_SYS_RESOURCE here: rootful podman's default ulimits (1048576) cannot be set, and podman
# caps its own RLIMIT_NPROC at 32768. crun 1.8 refuses hybrid cgroups, so use runc.
hn=$(ulimit -Hn); hu=$(ulimit -Hu)
if [ "$hn" = unlimited ] || [ "$hn" -gt 1048576 ]; then hn=1048576; fi
if [ "$hu" = unlimited ] || [ "$hu" -gt 32768 ]; then hu=32768; fi
export CONTAINERS_CONF=$WORK/containers.conf
cat >"$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=$hn:$hn", "nproc=$hu:$hu"]
[engine]
runtime = "runc"
EOF

# ── base image: Debian + python3, cached per suite and host CA set ───────────────────────────
phase_start "base image"
exec 9>"$CACHE_DIR/base.lock"
flock 9   # two runs on one machine must not debootstrap into the same place at once
extra_cas=()
for crt in /usr/local/share/ca-certificates/*.crt; do [ -f "$crt" ] && extra_cas+=("$crt"); done
base_key=$( { echo "recipe=$BASE_RECIPE suite=$SUITE"; cat "${extra_cas[@]}" /dev/null; } |
            sha256sum | cut -c1-16)
have_key=$(podman image inspect --format '{{index .Labels "io.preview-gateway.base-key"}}' \
           "$BASE_IMAGE" 2>/dev/null || true)
if [ "$have_key" = "$base_key" ]; then
    log "reusing $BASE_IMAGE (key $base_key)"
else
    log "building $BASE_IMAGE with debootstrap (key $base_key; log: $CACHE_DIR/debootstrap-$SUITE.log)"
    MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$MIRROR" ] || MIRROR=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
    ROOTFS=$CACHE_DIR/rootfs-$SUITE
    rm -rf "$ROOTFS"
    mkdir -p "$CACHE_DIR/debs-$SUITE"
    debootstrap --variant=minbase --cache-dir="$CACHE_DIR/debs-$SUITE" \
        --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates,passwd \
        "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE_DIR/debootstrap-$SUITE.log" 2>&1 ||
        { tail -20 "$CACHE_DIR/debootstrap-$SUITE.log" >&2; fail "debootstrap $SUITE"; }
    if [ ${#extra_cas[@]} -gt 0 ]; then   # TLS-intercepting egress: pip must trust its CA
        cp "${extra_cas[@]}" "$ROOTFS/usr/local/share/ca-certificates/"
        chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1
    fi
    chroot "$ROOTFS" apt-get clean
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/* "$ROOTFS/etc/hostname"
    : >"$ROOTFS/etc/resolv.conf"
    tar --numeric-owner -C "$ROOTFS" -c . |
        podman import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
            --change "LABEL io.preview-gateway.base-key=$base_key" - "$BASE_IMAGE" \
            >"$CACHE_DIR/import-$SUITE.log" 2>&1 ||
        { cat "$CACHE_DIR/import-$SUITE.log" >&2; fail "podman import"; }
    rm -rf "$ROOTFS"
fi
flock -u 9
phase_end "base image"

# ── app image ───────────────────────────────────────────────────────────────────────────────
phase_start "build image"
build() {
    buildah build --isolation chroot --network host --format docker --layers --quiet \
        --build-arg BASE="$BASE_IMAGE" "$@" "$CONTEXT" >"$WORK/build.log" 2>&1 ||
        { tail -40 "$WORK/build.log" >&2; fail "buildah build $*"; }
}
previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
build -t "$IMAGE"
if [ "$(podman image inspect --format '{{.Id}}' "$IMAGE")" != "$previous" ]; then
    # Something changed. Tag the builder stage as well (all cached: about 1 s), so that pruning
    # keeps its layers, then drop the layers of earlier builds that nothing tagged uses any
    # more. Only this project's images are pruned: they all carry the base image's label.
    build --target builder -t "$BUILDER_IMAGE"
    podman image prune -f --filter "label=io.preview-gateway.base-key" >/dev/null 2>&1 || true
fi
phase_end "build image"
log "image $IMAGE: $(podman image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=iec) bytes"

# Static checks of the image config.
[ "$(podman image inspect --format '{{.Config.User}}' "$IMAGE")" = "10001:10001" ] ||
    fail "image must run as uid 10001"
[[ "$(podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")" == *healthz* ]] ||
    fail "image has no HEALTHCHECK on /healthz (built without --format docker?)"
[ "$(podman image inspect --format '{{.Config.StopSignal}}' "$IMAGE")" = "SIGTERM" ] ||
    fail "STOPSIGNAL must be SIGTERM"

# ── run ─────────────────────────────────────────────────────────────────────────────────────
phase_start "run + API + preview"
read -r EDGE_PORT API_PORT UP_PORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
log "ports: edge $EDGE_PORT, api $API_PORT, upstream $UP_PORT"

MARKER="pgw-smoke-$(date +%s%N)"
mkdir -p "$WORK/www"
echo "hello from the upstream: $MARKER" >"$WORK/www/index.html"
python3 -m http.server "$UP_PORT" --bind 127.0.0.1 --directory "$WORK/www" \
    >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!

# --read-only as in Kubernetes (readOnlyRootFilesystem); podman mounts a tmpfs on /tmp.
# --health-interval disable: no systemd here for podman's timers; the check is run by hand.
# (podman 4.3 still logs "unable to get systemd connection": harmless, kept in podman.log.)
podman run -d --name "$NAME" --network host --read-only --health-interval disable \
    -e GATEWAY_BIND=127.0.0.1 \
    -e GATEWAY_EDGE_PORT="$EDGE_PORT" -e GATEWAY_API_PORT="$API_PORT" \
    -e GATEWAY_ALLOWED_TARGETS=127.0.0.0/8 -e GATEWAY_API_KEYS="$API_KEY" \
    -e GATEWAY_SHUTDOWN_GRACE_S=5 \
    "$IMAGE" >/dev/null 2>>"$WORK/podman.log" || { cat "$WORK/podman.log" >&2; fail "podman run"; }
API=http://127.0.0.1:$API_PORT
ready=0
for _ in $(seq 1 100); do
    if curl -fsS --max-time 1 -o /dev/null "$API/readyz" 2>/dev/null; then ready=1; break; fi
    [ "$(podman inspect --format '{{.State.Running}}' "$NAME")" = true ] || fail "container exited"
    sleep 0.1
done
[ "$ready" = 1 ] || fail "/readyz not 200 within 10 s"
log "ready: $(curl -fsS "$API/readyz")"
[[ "$(curl -fsS "$API/healthz")" == *'"ok"'* ]] || fail "/healthz"
podman healthcheck run "$NAME" >/dev/null 2>&1 || fail "HEALTHCHECK (podman healthcheck run) failed"
[ "$(podman top "$NAME" huser | tail -n1 | tr -d ' ')" = 10001 ] || fail "process is not uid 10001"
log "$(podman exec "$NAME" python -c 'import sys, gateway; print("preview-gateway", gateway.__version__, "on python", sys.version.split()[0])'), uid 10001, healthcheck ok"

AUTH=(-H "Authorization: Bearer ${API_KEY#*:}" -H "Content-Type: application/json")
curl -fsS "${AUTH[@]}" "$API/v0/sandboxes" \
    -d '{"metadata":{"name":"sb"},"spec":{"target":{"host":"127.0.0.1"}}}' >/dev/null ||
    fail "create sandbox"
curl -fsS "${AUTH[@]}" "$API/v0/sandboxes/sb/previews" \
    -d "{\"metadata\":{\"name\":\"web\"},\"spec\":{\"port\":$UP_PORT,\"public\":true}}" \
    >"$WORK/preview.json" || fail "create preview"
URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["spec"]["url"])' "$WORK/preview.json")
HOST=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).hostname)' "$URL")
log "preview: $URL"
[ "$URL" = "http://$HOST:$EDGE_PORT/" ] || fail "unexpected spec.url $URL"
body=$(curl -fsS --max-time 5 --resolve "$HOST:$EDGE_PORT:127.0.0.1" "$URL") ||
    fail "GET $URL"
[[ "$body" == *"$MARKER"* ]] || fail "preview body lacks the upstream's marker: $body"
code=$(curl -sS -o /dev/null -w '%{http_code}' \
    -H "Host: aaaaaaaaaaaaaaaaaaaaaa.local.preview.localhost" "http://127.0.0.1:$EDGE_PORT/")
[ "$code" = 404 ] || fail "unknown host gave $code, not 404"
log "preview served the upstream's page; unknown host -> 404"
phase_end "run + API + preview"

# ── SIGTERM ─────────────────────────────────────────────────────────────────────────────────
phase_start "SIGTERM"
# podman stop sends the image's STOPSIGNAL (SIGTERM), and SIGKILL only after 20 s.
podman stop -t 20 "$NAME" >/dev/null 2>>"$WORK/podman.log" || fail "podman stop"
exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
[ "$exit_code" = 0 ] || fail "exit code after SIGTERM: $exit_code (137 = killed after the timeout)"
[[ "$(podman logs "$NAME" 2>&1)" == *"draining"* ]] || fail "no 'draining' line in the logs"
log "SIGTERM: drained and exited 0"
phase_end "SIGTERM"

log "timings:"
for t in "${TIMINGS[@]}"; do log "  $t"; done
log "  $(printf '%-22s %6ss' total "$(secs "$T0")")"
