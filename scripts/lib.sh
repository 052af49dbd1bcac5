# Helpers shared by the scripts here. Source it; do not run it.

# Cargo builds land outside the clone, so a fresh clone (CI's) reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/natter/target}"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
# Installs the Debian packages given that are not installed yet.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

require_rust() {
  command -v cargo >/dev/null || { echo "Rust is needed: https://rustup.rs" >&2; exit 1; }
  for component in rustfmt clippy; do
    cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$component"
  done
}

# Makes a PostgreSQL server reachable for the tests and exports its URL as
# NATTER_TEST_POSTGRES. Uses the one at $NATTER_TEST_POSTGRES (default: the
# local server on 5432 with trust auth); when that does not answer, installs
# PostgreSQL if needed and runs a private, throwaway cluster on port 54329.
ensure_postgres() {
  local url="${NATTER_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
  apt_install postgresql-client
  if ! psql "$url/postgres" -Atqc 'select 1' >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
      as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    done
  fi
  if ! psql "$url/postgres" -Atqc 'select 1' >/dev/null 2>&1; then
    apt_install postgresql
    local bin dir port=54329
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    dir="${XDG_CACHE_HOME:-$HOME/.cache}/natter/postgres"
    url="postgres://postgres@127.0.0.1:$port"
    local run=()
    # As root the cluster runs as the postgres user, who cannot enter
    # root's home (0700): it lives in that user's own home instead.
    if [ "$(id -u)" -eq 0 ]; then run=(runuser -u postgres --); dir=/var/lib/postgresql/natter-test-cluster; fi
    if [ ! -f "$dir/PG_VERSION" ]; then
      say "creating a private PostgreSQL cluster in $dir"
      mkdir -p "$dir"; [ ${#run[@]} -gt 0 ] && chown postgres "$dir"
      "${run[@]}" "$bin/initdb" -D "$dir" -U postgres -A trust >/dev/null
    fi
    # How the fault tests stop and start it (`$NATTER_TEST_POSTGRES_CTL stop`).
    export NATTER_TEST_POSTGRES_CTL="${run[*]} $bin/pg_ctl -D $dir -l $dir/server.log -w -o '-p $port -k /tmp -c listen_addresses=127.0.0.1'"
    if ! psql "$url/postgres" -Atqc 'select 1' >/dev/null 2>&1; then
      say "starting the private PostgreSQL cluster on port $port"
      sh -c "$NATTER_TEST_POSTGRES_CTL start" >/dev/null
    fi
  fi
  psql "$url/postgres" -Atqc 'select 1' >/dev/null
  # Databases left by earlier runs (each test makes its own). A run that was
  # killed may have left a server connected: FORCE ends its sessions, and a
  # database that still cannot go is only clutter, not a reason to stop.
  export NATTER_TEST_POSTGRES="$url"
  psql "$url/postgres" -Atqc "select datname from pg_database where datname like 'natter_test_%'" |
    while read -r db; do
      drop_database "$db" 2>/dev/null || echo "note: could not drop the leftover test database $db" >&2
    done
}

# drop_database NAME: drops a database of $NATTER_TEST_POSTGRES, ending its
# sessions (a server still connected).
drop_database() {
  psql "$NATTER_TEST_POSTGRES/postgres" -qc "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null
}

# The S3-compatible server the picture-store tests run against.
ensure_s3s_fs() {
  if ! command -v s3s-fs >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
    say "installing s3s-fs (a small S3-compatible server) for the S3 tests"
    # 0.14.1 is the newest release that builds with rustc 1.95.
    cargo install s3s-fs --version 0.14.1 --features binary --locked
  fi
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Makes RabbitMQ answer for the tests that run several nodes, and exports its
# URL as NATTER_TEST_AMQP: the broker named there, or a local one on 5672,
# installed and started when missing.
ensure_rabbitmq() {
  export NATTER_TEST_AMQP="${NATTER_TEST_AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}"
  [ "$NATTER_TEST_AMQP" = "amqp://guest:guest@127.0.0.1:5672/%2f" ] || return 0
  if ! port_open 127.0.0.1 5672; then
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    say "starting RabbitMQ"
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 1 120); do
      port_open 127.0.0.1 5672 && break
      sleep 0.5
    done
    port_open 127.0.0.1 5672 || { echo "RabbitMQ did not start on 127.0.0.1:5672" >&2; exit 1; }
  fi
  drop_test_exchanges
}

# Exchanges left by earlier runs: each multi-node test deployment declares
# its own, durable as a real deployment's (their queues expire by
# themselves). Deleted in one `rabbitmqctl eval`, as a broker's own
# tools offer no exchange deletion without the management plugin; one that
# cannot go is only clutter, not a reason to stop.
drop_test_exchanges() {
  command -v rabbitmqctl >/dev/null || return 0
  local names
  names=$(as_root rabbitmqctl -q list_exchanges name 2>/dev/null | grep '^natter\.\(test\|load\)\.' |
    sed 's/.*/<<"&">>/' | paste -sd, -) || true
  [ -n "$names" ] || return 0
  as_root rabbitmqctl -q eval "[rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, N), false, <<\"natter-tests\">>) || N <- [$names]]." \
    >/dev/null 2>&1 || echo "note: could not delete the test exchanges left by earlier runs" >&2
}

# What the desktop app needs to build and to be tested in a real window:
# WebKitGTK and friends for Tauri, Xvfb and xdotool for a window without a
# screen, dbus for the notification test.
ensure_desktop_deps() {
  apt_install libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev \
    libssl-dev xvfb xdotool dbus webkit2gtk-driver fonts-noto-color-emoji fonts-dejavu-core
  command -v node >/dev/null && command -v npm >/dev/null ||
    { echo "Node.js and npm are needed for the app's UI: https://nodejs.org" >&2; exit 1; }
  # What the UI's build tool (Vite 7) runs on; npm only warns, and the build
  # would fail later, halfway.
  node -e 'const [a, b] = process.versions.node.split(".").map(Number);
    process.exit((a === 20 && b >= 19) || (a === 22 && b >= 12) || a > 22 ? 0 : 1)' ||
    { echo "Node.js 20.19+ or 22.12+ is needed for the app's UI (this is $(node --version)): https://nodejs.org" >&2; exit 1; }
}

# Installs the UI's packages (exactly as locked) and builds it into ui/dist,
# which the desktop binary embeds.
build_ui() {
  if [ ! -d ui/node_modules ] || [ ui/package-lock.json -nt ui/node_modules/.package-lock.json ]; then
    say "installing the UI's packages"
    (cd ui && npm ci --no-audit --no-fund)
  fi
  say "building the UI"
  (cd ui && npm run build)
}

# The Tauri CLI, which builds the app's installable bundles. 2.12.4 goes with
# the tauri crate in Cargo.lock (2.12) and builds with rustc 1.95.
ensure_tauri_cli() {
  if ! cargo tauri --version 2>/dev/null | grep -q '^tauri-cli 2\.12\.'; then
    say "installing tauri-cli 2.12.4 (builds the app's bundles)"
    cargo install tauri-cli --version 2.12.4 --locked
  fi
}

# Builds the Linux .deb of the desktop app (the `app` profile of Cargo.toml:
# release, size-optimized with link-time optimization) and checks what is in
# it. The AppImage needs linuxdeploy, which Tauri downloads from GitHub at
# build time: machines without that access build the .deb only.
build_linux_bundle() {
  ensure_tauri_cli
  say "building the desktop app's Linux bundle (.deb)"
  (cd src-tauri && cargo tauri build --ci --bundles deb -- --profile app)
  local deb
  deb=$(ls -t "$CARGO_TARGET_DIR"/app/bundle/deb/*.deb | head -n 1)
  dpkg-deb --field "$deb" Package Version Depends
  dpkg-deb --contents "$deb" | grep -q 'usr/bin/natter-desktop' ||
    { echo "the bundle has no usr/bin/natter-desktop" >&2; exit 1; }
  echo "bundle: $deb"
}

# tauri-driver, which the end-to-end test drives the real app through (it
# starts Debian's WebKitWebDriver). 2.1.0 builds with rustc 1.95.
ensure_tauri_driver() {
  if ! command -v tauri-driver >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/tauri-driver" ]; then
    say "installing tauri-driver 2.1.0 (drives the app in the end-to-end test)"
    cargo install tauri-driver --version 2.1.0 --locked
  fi
}

# Servers for the load runs (scripts/load-smoke, scripts/bench).

# A port nothing listens on, below the kernel's range for outgoing
# connections: a port from that range can be taken by some connection's
# local end between this check and the node's bind.
free_port() {
  local port low
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  while :; do
    port=$((10000 + RANDOM % (low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
}

# start_node NAME [ENV=VALUE...]: starts a node ($bin/natter-server, its data
# folder and log in $work, its JWT secret $node_secret); sets NODE_PID and
# NODE_PORT and adds the pid to the caller's `pids`. With NODE_PORT_WANTED
# set, on that port (a node coming back).
start_node() {
  local name=$1; shift
  local port=${NODE_PORT_WANTED:-$(free_port)}
  mkdir -p "$work/$name"
  env NATTER_ADDR="127.0.0.1:$port" NATTER_DATA_DIR="$work/$name" NATTER_NODE_ID="$name" \
    NATTER_JWT_SECRET="$node_secret" NATTER_LOG=warn "$@" \
    "$bin/natter-server" >>"$work/$name.log" 2>&1 &
  NODE_PID=$!
  NODE_PORT=$port
  pids+=("$NODE_PID")
}

# wait_healthy PORT NAME: waits for the node's health; shows its log if it
# never comes up.
wait_healthy() {
  for _ in $(seq 1 300); do
    if curl -sf "http://127.0.0.1:$1/health" >/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "the node $2 on port $1 never became healthy; its log:" >&2
  tail -n 30 "$work/$2.log" >&2 || true
  exit 1
}
