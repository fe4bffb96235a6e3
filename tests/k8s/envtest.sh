#!/usr/bin/env bash
# envtest: a reproducible local Kubernetes API server (etcd + kube-apiserver, loopback only)
# for Switchyard's tests. See tests/k8s/README.md.
#
#   envtest.sh install            apt packages + build kube-apiserver/kubectl into the cache
#   envtest.sh start              install if needed, start etcd + kube-apiserver, wait for /readyz
#   envtest.sh stop               stop both (by PID), remove the tmpfs etcd data
#   envtest.sh status             exit 0 if running and /readyz is ok
#   envtest.sh stop-apiserver     stop only kube-apiserver (etcd and its data stay)
#   envtest.sh start-apiserver    start kube-apiserver again, same port, certs and etcd
#   envtest.sh restart-apiserver  stop-apiserver + start-apiserver
#
# Environment:
#   ENVTEST_DIR            state, kubeconfigs, env file, logs      (default /tmp/switchyard-envtest)
#   ENVTEST_PORT           kube-apiserver port on 127.0.0.1         (default: a free port)
#   ENVTEST_ETCD_PORT      etcd client port on 127.0.0.1            (default: a free port)
#   ENVTEST_CACHE_DIR      built binaries  (default ${XDG_CACHE_HOME:-~/.cache}/switchyard-envtest)
#   ENVTEST_BUILD_DIR      scratch for the one-off build, ~2 GB     (default ${TMPDIR:-/tmp}/switchyard-envtest-build)
#   ENVTEST_READY_TIMEOUT  seconds to wait for /readyz, at most 60  (default 60)
#   ENVTEST_APISERVER_PROFILING  true: kube-apiserver serves /debug/pprof (default false)
set -euo pipefail

# --- Settings --------------------------------------------------------------------------------

# Kubernetes comes from Debian bookworm's `kubernetes` source package (upstream v1.20.2 with
# vendor/), built with Debian's Go. Bump RECIPE when the build recipe changes: it is part of the
# cache key, so every machine rebuilds once.
KUBE_VERSION=1.20.2
RECIPE=2
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${ENVTEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}

ENVTEST_DIR=${ENVTEST_DIR:-/tmp/switchyard-envtest}
CACHE_ROOT=${ENVTEST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-envtest}
BUILD_DIR=${ENVTEST_BUILD_DIR:-${TMPDIR:-/tmp}/switchyard-envtest-build}
KUBE_BIN_DIR=$CACHE_ROOT/kubernetes-v$KUBE_VERSION-r$RECIPE
ETCD_BIN_DIR=$CACHE_ROOT/etcd
KUBE_APISERVER=$KUBE_BIN_DIR/kube-apiserver
KUBECTL=$KUBE_BIN_DIR/kubectl
ETCD=$ETCD_BIN_DIR/etcd

READY_TIMEOUT=${ENVTEST_READY_TIMEOUT:-60}
((READY_TIMEOUT > 60)) && READY_TIMEOUT=60

LOG_DIR=$ENVTEST_DIR/logs
PKI_DIR=$ENVTEST_DIR/pki
STATE_FILE=$ENVTEST_DIR/state
ETCD_PIDFILE=$ENVTEST_DIR/etcd.pid
APISERVER_PIDFILE=$ENVTEST_DIR/kube-apiserver.pid
GATEWAY_USER=switchyard-gateway
GATEWAY_SA_NAMESPACE=default

# --- Helpers ---------------------------------------------------------------------------------

say() { printf 'envtest: %s\n' "$*"; }
warn() { printf 'envtest: warning: %s\n' "$*" >&2; }
die() {
  printf 'envtest: error: %s\n' "$*" >&2
  exit 1
}

# Runs apt-get as root (directly, or through passwordless sudo).
as_root() {
  if ((EUID == 0)); then
    "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo "$@"
  else
    die "need root to run: $*  (run this script as root, or install the packages yourself)"
  fi
}

apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$LOG_DIR/install.log" 2>&1; then
    as_root apt-get update -qq >>"$LOG_DIR/install.log" 2>&1 || die "apt-get update failed (see $LOG_DIR/install.log)"
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$LOG_DIR/install.log" 2>&1 ||
      die "apt-get install ${missing[*]} failed (see $LOG_DIR/install.log)"
  fi
}

pid_alive() { # pid_alive PIDFILE NAME: the process in PIDFILE runs and is NAME
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" | head -n1 | grep -q "$2\$"
}

kill_pidfile() { # kill_pidfile PIDFILE NAME: SIGTERM, wait up to 15 s, then SIGKILL
  local pid i
  if pid_alive "$1" "$2"; then
    pid=$(<"$1")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      pid_alive "$1" "$2" || break
      sleep 0.1
    done
    if pid_alive "$1" "$2"; then
      warn "$2 (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        pid_alive "$1" "$2" || break
        sleep 0.1
      done
    fi
  fi
  rm -f "$1"
}

# port_in_use PORT [listen]: true if a local TCP socket uses PORT (any state; with "listen",
# only listening sockets: our servers set SO_REUSEADDR, so TIME_WAIT leftovers do not matter).
port_in_use() {
  local hex
  hex=$(printf '%04X' "$1")
  awk -v h="$hex" -v listen="${2:-}" \
    'NR > 1 { split($2, a, ":"); if (a[2] == h && (listen == "" || $4 == "0A")) found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

free_port() { # a free port in 20000-32767 (below Linux's default ephemeral range)
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + (RANDOM % 12768)))
    port_in_use "$p" || {
      echo "$p"
      return 0
    }
  done
  die "could not find a free TCP port"
}

# Runs a daemon detached (own session, no inherited stdio or lock fd), logging to LOG; writes
# its PID to PIDFILE. daemon PIDFILE LOG CMD...
daemon() {
  local pidfile=$1 log=$2
  shift 2
  printf '\n==== %s: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$log"
  # shellcheck disable=SC2016 # $$ belongs to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$log" 2>&1 9>&- &
  local i name=${1##*/}
  for ((i = 0; i < 250; i++)); do # until the exec has happened
    pid_alive "$pidfile" "$name" && return 0
    sleep 0.02
  done
  die "could not start $name (log: $log)"
}

# KEY=VALUE lines that both `source` and naive KEY=VALUE parsers read the same way: values are
# written raw unless they contain shell-special characters. kv_lines K1 V1 K2 V2 ...
kv_lines() {
  while (($#)); do
    if [[ $2 =~ ^[A-Za-z0-9_./:,@%+=-]*$ ]]; then
      printf '%s=%s\n' "$1" "$2"
    else
      printf '%s=%q\n' "$1" "$2"
    fi
    shift 2
  done
}

tail_log() {
  printf -- '---- last lines of %s ----\n' "$1" >&2
  tail -n "${2:-25}" "$1" >&2 || true
  printf -- '----\n' >&2
}

# --- install ---------------------------------------------------------------------------------

have_kube_bins() {
  [[ -x $KUBE_APISERVER && -x $KUBECTL && -f $KUBE_BIN_DIR/BUILD-INFO ]]
}

install_etcd() {
  [[ -x $ETCD ]] && return 0
  # The etcd-server .deb is unpacked into the cache rather than installed: installing it would
  # register (and on systemd hosts start) a system etcd service on port 2379.
  say "fetching etcd (Debian etcd-server) into $ETCD_BIN_DIR"
  local tmp
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download etcd-server >>"$LOG_DIR/install.log" 2>&1); then
    as_root apt-get update -qq >>"$LOG_DIR/install.log" 2>&1 || die "apt-get update failed (see $LOG_DIR/install.log)"
    (cd "$tmp" && apt-get download etcd-server >>"$LOG_DIR/install.log" 2>&1) ||
      die "apt-get download etcd-server failed (see $LOG_DIR/install.log)"
  fi
  dpkg-deb -x "$tmp"/etcd-server_*.deb "$tmp/x"
  mkdir -p "$ETCD_BIN_DIR"
  install -m 755 "$tmp/x/usr/bin/etcd" "$ETCD.tmp"
  mv -f "$ETCD.tmp" "$ETCD"
  basename "$tmp"/etcd-server_*.deb >"$ETCD_BIN_DIR/DEB"
  rm -rf "$tmp"
}

build_kube() {
  local t0=$SECONDS
  say "building kube-apiserver + kubectl v$KUBE_VERSION from Debian's kubernetes source (one-off, ~5 min on 2 cores)"
  say "build log: $LOG_DIR/install.log"
  apt_install golang-go golang-github-modern-go-reflect2-dev dpkg-dev rsync jq make
  local reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
  [[ -f $reflect2/reflect2.go ]] || die "$reflect2 missing (golang-github-modern-go-reflect2-dev)"

  rm -rf "$BUILD_DIR"
  mkdir -p "$BUILD_DIR/apt/lists/partial"
  # A private apt source list (deb-src for bookworm main), so the system's apt config is untouched.
  echo "deb-src $DEBIAN_MIRROR $DEBIAN_SUITE main" >"$BUILD_DIR/apt/sources.list"
  local aptopts=(-o "Dir::Etc::SourceList=$BUILD_DIR/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$BUILD_DIR/apt/lists" -o "Dir::Cache=$BUILD_DIR/apt/cache")
  mkdir -p "$BUILD_DIR/apt/cache/archives/partial"
  apt-get "${aptopts[@]}" update >>"$LOG_DIR/install.log" 2>&1 ||
    die "apt-get update for deb-src $DEBIAN_SUITE failed (see $LOG_DIR/install.log)"
  local debver
  debver=$(apt-cache "${aptopts[@]}" showsrc kubernetes 2>/dev/null | awk '/^Version:/ { print $2; exit }')
  [[ $debver == *"$KUBE_VERSION"* ]] ||
    die "Debian $DEBIAN_SUITE's kubernetes source is '${debver:-missing}', expected upstream $KUBE_VERSION"
  say "apt-get source kubernetes=$debver"
  (cd "$BUILD_DIR" && apt-get "${aptopts[@]}" source "kubernetes=$debver" >>"$LOG_DIR/install.log" 2>&1) ||
    die "apt-get source kubernetes failed (see $LOG_DIR/install.log)"
  local src
  src=$(find "$BUILD_DIR" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
  [[ -n $src && -f $src/Makefile && -d $src/vendor ]] || die "unexpected source tree in $BUILD_DIR"

  # Vendored reflect2 v1.0.1 faults under Go >= 1.18 ("fatal error: fault" in UnsafeIterate) on
  # the first custom-resource write; Debian's 1.0.2 is fixed and API-compatible.
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  mkdir -p "$src/vendor/github.com/modern-go/reflect2"
  find "$reflect2" -maxdepth 1 -type f -name '*.go' ! -name '*_test.go' -exec cp -L {} "$src/vendor/github.com/modern-go/reflect2/" \;
  cp -L "$reflect2/LICENSE" "$src/vendor/github.com/modern-go/reflect2/" 2>/dev/null || true

  # Go >= 1.16 shares reflect.Zero's buffer, which makes the vendored OpenAPI type validator
  # treat every zero value ("", 0, false) as null: CRDs with `default: ""` and custom resources
  # with "", 0 or false in non-nullable fields are rejected ('Invalid value: "null": ... must be
  # of type string'). Upstream fix: kube-openapi#230 (kubernetes#99804), first in 1.21.
  local f patched=0
  for f in vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go vendor/github.com/go-openapi/validate/type.go; do
    [[ -f $src/$f ]] || continue
    sed -i 's/if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {/if data == nil {/' "$src/$f"
    grep -q 'reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data))' "$src/$f" && die "could not patch $f"
    patched=$((patched + 1))
  done
  ((patched)) || die "OpenAPI type validator not found in the vendor tree; the zero-value patch needs updating"

  local epoch gover
  epoch=$(cd "$src" && dpkg-parsechangelog -STimestamp)
  gover=$(go version | awk '{ print $3 }')
  say "make WHAT=\"cmd/kube-apiserver cmd/kubectl\" with $gover (nice -n 10)"
  (
    cd "$src"
    unset GOFLAGS GO111MODULE GOPATH GOBIN CGO_ENABLED
    export GOPROXY=off GOTOOLCHAIN=local GOCACHE="$BUILD_DIR/gocache" SOURCE_DATE_EPOCH="$epoch"
    export KUBE_GIT_VERSION="v$KUBE_VERSION" KUBE_GIT_MAJOR="${KUBE_VERSION%%.*}" KUBE_GIT_TREE_STATE=clean
    KUBE_GIT_MINOR=${KUBE_VERSION#*.}
    export KUBE_GIT_MINOR=${KUBE_GIT_MINOR%%.*}
    nice -n 10 make WHAT="cmd/kube-apiserver cmd/kubectl"
  ) >>"$LOG_DIR/install.log" 2>&1 || {
    tail_log "$LOG_DIR/install.log" 40
    die "building kube-apiserver failed (log: $LOG_DIR/install.log; sources kept in $BUILD_DIR)"
  }
  local out=$src/_output/local/bin/linux/amd64
  [[ -x $out/kube-apiserver && -x $out/kubectl ]] || out=$src/_output/bin
  [[ -x $out/kube-apiserver && -x $out/kubectl ]] || die "build finished but no binaries under $src/_output"

  rm -rf "$KUBE_BIN_DIR.tmp"
  mkdir -p "$KUBE_BIN_DIR.tmp"
  install -m 755 "$out/kube-apiserver" "$out/kubectl" "$KUBE_BIN_DIR.tmp/"
  {
    echo "kubernetes upstream: v$KUBE_VERSION"
    echo "debian source: kubernetes $debver ($DEBIAN_SUITE)"
    echo "go: $gover"
    echo "reflect2: vendor replaced with golang-github-modern-go-reflect2-dev $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
    echo "kube-openapi: zero-value type check removed (kube-openapi#230, kubernetes#99804)"
    echo "recipe: $RECIPE"
    echo "built: $(date -u +%FT%TZ) in $((SECONDS - t0)) s"
    (cd "$KUBE_BIN_DIR.tmp" && sha256sum kube-apiserver kubectl)
  } >"$KUBE_BIN_DIR.tmp/BUILD-INFO"
  rm -rf "$KUBE_BIN_DIR"
  mv "$KUBE_BIN_DIR.tmp" "$KUBE_BIN_DIR"
  # Drop builds of older recipes/versions.
  find "$CACHE_ROOT" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-v*' ! -path "$KUBE_BIN_DIR" -exec rm -rf {} +
  [[ -n ${ENVTEST_KEEP_BUILD:-} ]] || rm -rf "$BUILD_DIR"
  say "built in $((SECONDS - t0)) s"
}

cmd_install() {
  mkdir -p "$LOG_DIR" "$CACHE_ROOT"
  command -v openssl >/dev/null || apt_install openssl
  # One installer at a time per cache (concurrent test processes may all call start).
  exec 8>"$CACHE_ROOT/.install.lock"
  flock 8
  install_etcd
  have_kube_bins || build_kube
  exec 8>&-
  say "etcd:           $ETCD"
  say "kube-apiserver: $KUBE_APISERVER"
  say "kubectl:        $KUBECTL"
}

# --- PKI, identities, kubeconfigs ------------------------------------------------------------

gen_pki() {
  rm -rf "$PKI_DIR"
  mkdir -p "$PKI_DIR"
  chmod 700 "$PKI_DIR"
  (
    cd "$PKI_DIR"
    # CA, and a serving certificate for 127.0.0.1/localhost (ECDSA P-256; webpki/rustls accept it).
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -keyout ca.key -out ca.crt -subj "/CN=switchyard-envtest-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
    cat >apiserver.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
EOF
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile apiserver.ext -out apiserver.crt
    # Service-account token signing keys.
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
    # Static bearer tokens: token,user,uid,"groups"
    admin_token=$(openssl rand -hex 24)
    gateway_token=$(openssl rand -hex 24)
    {
      echo "$admin_token,switchyard-admin,switchyard-admin,\"system:masters\""
      echo "$gateway_token,$GATEWAY_USER,$GATEWAY_USER"
    } >tokens.csv
    echo "$admin_token" >admin.token
    echo "$gateway_token" >gateway.token
    chmod 600 ./*.key ./*.token tokens.csv
  ) >>"$LOG_DIR/pki.log" 2>&1 || {
    tail_log "$LOG_DIR/pki.log"
    die "generating certificates failed"
  }
}

write_kubeconfig() { # write_kubeconfig FILE USER TOKEN
  local ca
  ca=$(base64 -w0 <"$PKI_DIR/ca.crt")
  cat >"$1.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: switchyard-envtest
  cluster:
    server: https://127.0.0.1:$PORT
    certificate-authority-data: $ca
users:
- name: $2
  user:
    token: $3
contexts:
- name: $2@switchyard-envtest
  context:
    cluster: switchyard-envtest
    user: $2
    namespace: default
current-context: $2@switchyard-envtest
EOF
  chmod 600 "$1.tmp"
  mv -f "$1.tmp" "$1"
}

write_env() {
  local etcd_pid api_pid
  etcd_pid=$(cat "$ETCD_PIDFILE" 2>/dev/null || true)
  api_pid=$(cat "$APISERVER_PIDFILE" 2>/dev/null || true)
  {
    echo "# Written by tests/k8s/envtest.sh; source it (set -a; . FILE; set +a) or parse KEY=VALUE."
    kv_lines \
      KUBECONFIG_ADMIN "$ENVTEST_DIR/admin.kubeconfig" \
      KUBECONFIG_GATEWAY "$ENVTEST_DIR/gateway.kubeconfig" \
      KUBECONFIG_GATEWAY_SA "$ENVTEST_DIR/gateway-sa.kubeconfig" \
      KUBECTL "$KUBECTL" \
      KUBE_APISERVER_URL "https://127.0.0.1:$PORT" \
      KUBE_CA_FILE "$PKI_DIR/ca.crt" \
      ETCD_URL "http://127.0.0.1:$ETCD_PORT" \
      ENVTEST_PIDS "$etcd_pid,$api_pid" \
      ENVTEST_ETCD_PID "$etcd_pid" \
      ENVTEST_APISERVER_PID "$api_pid" \
      ENVTEST_DIR "$ENVTEST_DIR"
  } >"$ENVTEST_DIR/env.tmp"
  mv -f "$ENVTEST_DIR/env.tmp" "$ENVTEST_DIR/env"
}

# A real ServiceAccount identity for the gateway (system:serviceaccount:default:switchyard-gateway)
# with a TokenRequest-issued token, next to the static-token user in gateway.kubeconfig.
make_gateway_sa() {
  local k=("$KUBECTL" --kubeconfig "$ENVTEST_DIR/admin.kubeconfig" --request-timeout=10s)
  "${k[@]}" -n "$GATEWAY_SA_NAMESPACE" create serviceaccount "$GATEWAY_USER" >>"$LOG_DIR/envtest.log" 2>&1 ||
    "${k[@]}" -n "$GATEWAY_SA_NAMESPACE" get serviceaccount "$GATEWAY_USER" >/dev/null 2>>"$LOG_DIR/envtest.log" ||
    die "creating ServiceAccount $GATEWAY_SA_NAMESPACE/$GATEWAY_USER failed (see $LOG_DIR/envtest.log)"
  local req=$ENVTEST_DIR/tokenrequest.json token
  echo '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":31536000}}' >"$req"
  token=$("${k[@]}" create --raw "/api/v1/namespaces/$GATEWAY_SA_NAMESPACE/serviceaccounts/$GATEWAY_USER/token" -f "$req" 2>>"$LOG_DIR/envtest.log" |
    sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
  rm -f "$req"
  [[ -n $token ]] || die "TokenRequest for ServiceAccount $GATEWAY_SA_NAMESPACE/$GATEWAY_USER failed (see $LOG_DIR/envtest.log)"
  write_kubeconfig "$ENVTEST_DIR/gateway-sa.kubeconfig" "system:serviceaccount:$GATEWAY_SA_NAMESPACE:$GATEWAY_USER" "$token"
}

# --- etcd / kube-apiserver -------------------------------------------------------------------

load_state() {
  [[ -f $STATE_FILE ]] || return 1
  # shellcheck disable=SC1090
  . "$STATE_FILE"
}

etcd_healthy() {
  local resp
  # shellcheck disable=SC2016 # $1 belongs to the inner shell
  resp=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "GET /health HTTP/1.0\r\n\r\n" >&3 && cat <&3' _ "$ETCD_PORT" 2>/dev/null) || return 1
  [[ $resp == *'"health":"true"'* ]]
}

apiserver_ready() {
  [[ -f $ENVTEST_DIR/admin.kubeconfig ]] || return 1
  "$KUBECTL" --kubeconfig "$ENVTEST_DIR/admin.kubeconfig" --request-timeout=3s get --raw /readyz >/dev/null 2>&1
}

start_etcd() {
  daemon "$ETCD_PIDFILE" "$LOG_DIR/etcd.log" "$ETCD" \
    --name switchyard-envtest --data-dir "$ETCD_DATA" --logger zap --log-level warn \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "switchyard-envtest=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
    --initial-cluster-token switchyard-envtest
  local deadline=$((SECONDS + 20))
  until etcd_healthy; do
    pid_alive "$ETCD_PIDFILE" etcd || {
      tail_log "$LOG_DIR/etcd.log"
      die "etcd exited during startup (log: $LOG_DIR/etcd.log)"
    }
    ((SECONDS < deadline)) || {
      tail_log "$LOG_DIR/etcd.log"
      die "etcd not healthy after 20 s (log: $LOG_DIR/etcd.log)"
    }
    sleep 0.1
  done
}

start_apiserver() {
  if port_in_use "$PORT" listen; then
    die "port 127.0.0.1:$PORT (kube-apiserver) is already in use"
  fi
  daemon "$APISERVER_PIDFILE" "$LOG_DIR/kube-apiserver.log" "$KUBE_APISERVER" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$PORT" --insecure-port 0 \
    --cert-dir "$PKI_DIR" --tls-cert-file "$PKI_DIR/apiserver.crt" --tls-private-key-file "$PKI_DIR/apiserver.key" \
    --client-ca-file "$PKI_DIR/ca.crt" --token-auth-file "$PKI_DIR/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI_DIR/sa.pub" --service-account-signing-key-file "$PKI_DIR/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 --endpoint-reconciler-type none \
    --profiling="${ENVTEST_APISERVER_PROFILING:-false}" --v 1
  write_env
  local deadline=$((SECONDS + READY_TIMEOUT))
  until apiserver_ready; do
    pid_alive "$APISERVER_PIDFILE" kube-apiserver || {
      tail_log "$LOG_DIR/kube-apiserver.log"
      die "kube-apiserver exited during startup (log: $LOG_DIR/kube-apiserver.log)"
    }
    ((SECONDS < deadline)) || {
      tail_log "$LOG_DIR/kube-apiserver.log"
      die "kube-apiserver not ready after $READY_TIMEOUT s (log: $LOG_DIR/kube-apiserver.log)"
    }
    sleep 0.2
  done
}

healthy() {
  load_state &&
    pid_alive "$ETCD_PIDFILE" etcd && pid_alive "$APISERVER_PIDFILE" kube-apiserver &&
    apiserver_ready
}

lock_envdir() {
  mkdir -p "$ENVTEST_DIR" "$LOG_DIR"
  exec 9>"$ENVTEST_DIR/.lock"
  flock 9
}

cmd_start() {
  local t0=$SECONDS
  mkdir -p "$ENVTEST_DIR" "$LOG_DIR"
  { [[ -x $ETCD ]] && have_kube_bins; } || cmd_install
  lock_envdir
  if healthy; then
    say "already running and healthy: $KUBE_APISERVER_URL (env: $ENVTEST_DIR/env)"
    return 0
  fi
  # etcd still up (e.g. after stop-apiserver): keep the data, bring kube-apiserver back.
  if load_state && pid_alive "$ETCD_PIDFILE" etcd && [[ -f $PKI_DIR/tokens.csv ]]; then
    say "etcd running, kube-apiserver down: starting kube-apiserver on 127.0.0.1:$PORT"
    kill_pidfile "$APISERVER_PIDFILE" kube-apiserver
    start_apiserver
    say "ready: $KUBE_APISERVER_URL (env: $ENVTEST_DIR/env)"
    return 0
  fi
  stop_all quiet

  PORT=${ENVTEST_PORT:-}
  ETCD_PORT=${ENVTEST_ETCD_PORT:-}
  if [[ -n $PORT ]]; then
    port_in_use "$PORT" listen && die "ENVTEST_PORT=$PORT: 127.0.0.1:$PORT is already in use"
  else
    PORT=$(free_port)
  fi
  if [[ -n $ETCD_PORT ]]; then
    port_in_use "$ETCD_PORT" listen && die "ENVTEST_ETCD_PORT=$ETCD_PORT: 127.0.0.1:$ETCD_PORT is already in use"
  else
    until ETCD_PORT=$(free_port) && ((ETCD_PORT != PORT)); do :; done
  fi
  until ETCD_PEER_PORT=$(free_port) && ((ETCD_PEER_PORT != PORT && ETCD_PEER_PORT != ETCD_PORT)); do :; done

  # etcd 3.4 has no --unsafe-no-fsync: keep its data on tmpfs.
  if [[ -d /dev/shm && -w /dev/shm ]]; then
    ETCD_DATA=$(mktemp -d /dev/shm/switchyard-envtest-etcd.XXXXXX)
  else
    warn "/dev/shm not writable; etcd data goes to disk (slower)"
    ETCD_DATA=$(mktemp -d "$ENVTEST_DIR/etcd-data.XXXXXX")
  fi
  KUBE_APISERVER_URL=https://127.0.0.1:$PORT
  kv_lines PORT "$PORT" ETCD_PORT "$ETCD_PORT" ETCD_PEER_PORT "$ETCD_PEER_PORT" \
    ETCD_DATA "$ETCD_DATA" KUBE_APISERVER_URL "$KUBE_APISERVER_URL" >"$STATE_FILE"

  gen_pki
  write_kubeconfig "$ENVTEST_DIR/admin.kubeconfig" switchyard-admin "$(<"$PKI_DIR/admin.token")"
  write_kubeconfig "$ENVTEST_DIR/gateway.kubeconfig" "$GATEWAY_USER" "$(<"$PKI_DIR/gateway.token")"

  say "starting etcd on 127.0.0.1:$ETCD_PORT (data: $ETCD_DATA)"
  start_etcd
  say "starting kube-apiserver v$KUBE_VERSION on 127.0.0.1:$PORT"
  start_apiserver
  make_gateway_sa
  say "ready in $((SECONDS - t0)) s: $KUBE_APISERVER_URL"
  say "env: $ENVTEST_DIR/env   logs: $LOG_DIR/"
}

stop_all() {
  kill_pidfile "$APISERVER_PIDFILE" kube-apiserver
  kill_pidfile "$ETCD_PIDFILE" etcd
  if load_state && [[ -n ${ETCD_DATA:-} ]]; then
    case $ETCD_DATA in
      /dev/shm/switchyard-envtest-etcd.* | "$ENVTEST_DIR"/etcd-data.*) rm -rf "$ETCD_DATA" ;;
    esac
  fi
  rm -f "$STATE_FILE" "$ENVTEST_DIR/env"
  [[ ${1:-} == quiet ]] || say "stopped"
}

cmd_stop() {
  [[ -d $ENVTEST_DIR ]] || {
    say "not running (no $ENVTEST_DIR)"
    return 0
  }
  lock_envdir
  stop_all
}

need_running_etcd() {
  load_state || die "not started (no $STATE_FILE); run: $0 start"
  pid_alive "$ETCD_PIDFILE" etcd || die "etcd is not running; run: $0 stop && $0 start"
  have_kube_bins || die "kube-apiserver binary missing from $KUBE_BIN_DIR; run: $0 install"
}

cmd_stop_apiserver() {
  lock_envdir
  need_running_etcd
  kill_pidfile "$APISERVER_PIDFILE" kube-apiserver
  write_env
  say "kube-apiserver stopped (etcd still running; port $PORT kept for start-apiserver)"
}

cmd_start_apiserver() {
  lock_envdir
  need_running_etcd
  if pid_alive "$APISERVER_PIDFILE" kube-apiserver && apiserver_ready; then
    say "kube-apiserver already running and ready: $KUBE_APISERVER_URL"
    return 0
  fi
  kill_pidfile "$APISERVER_PIDFILE" kube-apiserver
  local t0=$SECONDS
  start_apiserver
  say "kube-apiserver ready in $((SECONDS - t0)) s: $KUBE_APISERVER_URL"
}

cmd_restart_apiserver() {
  lock_envdir
  need_running_etcd
  kill_pidfile "$APISERVER_PIDFILE" kube-apiserver
  local t0=$SECONDS
  start_apiserver
  say "kube-apiserver restarted, ready in $((SECONDS - t0)) s: $KUBE_APISERVER_URL"
}

cmd_status() {
  if ! load_state; then
    say "not running"
    return 1
  fi
  local ok=0
  if pid_alive "$ETCD_PIDFILE" etcd; then
    say "etcd:           running (pid $(<"$ETCD_PIDFILE"), http://127.0.0.1:$ETCD_PORT)"
  else
    say "etcd:           NOT running"
    ok=1
  fi
  if pid_alive "$APISERVER_PIDFILE" kube-apiserver; then
    if apiserver_ready; then
      say "kube-apiserver: ready (pid $(<"$APISERVER_PIDFILE"), $KUBE_APISERVER_URL)"
    else
      say "kube-apiserver: running but /readyz fails (pid $(<"$APISERVER_PIDFILE"), $KUBE_APISERVER_URL)"
      ok=1
    fi
  else
    say "kube-apiserver: NOT running"
    ok=1
  fi
  return "$ok"
}

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
}

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  stop-apiserver) cmd_stop_apiserver ;;
  start-apiserver) cmd_start_apiserver ;;
  restart-apiserver) cmd_restart_apiserver ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
