#!/usr/bin/env bash
# lab/lab.sh — a throw-away lab of real components for nginx-medic's tests and demo: a fenced
# systemd user manager (own mount namespace, own cgroup2 group; see SYSTEMD-LAB.md), real nginx,
# a FastAPI backend on uvicorn, a Node.js backend, PHP-FPM on a unix socket and Django on
# gunicorn, all run as user units of that manager.
#
#   lab/lab.sh up   DIR BASE_PORT   build and start a lab in DIR (absolute path)
#   lab/lab.sh down DIR             end everything `up` started and remove DIR (safe to repeat,
#                                   also after a half-failed `up`)
#   lab/lab.sh env  DIR             print the exports that reach the lab's manager
#
# Ports: BASE_PORT >= 18000; the lab owns BASE..BASE+19:
#   BASE    api site (nginx)  -> BASE+10 api backend (uvicorn, api.service)
#   BASE+1  web site (nginx)  -> BASE+11 web backend (node, web.service)
#   BASE+2  php site (nginx)  -> unix:DIR/run/php/php-fpm.sock (php-fpm.service)
#   BASE+3  django site (nginx) -> BASE+13 django backend (gunicorn, django.service)
# Files in DIR: medic.yaml (nginx-medic config), manager.pid, config/systemd/user/*.service,
# config/{api,web,django}.env, nginx/{nginx.conf,sites-enabled/,logs/}, php/{php-fpm.conf,pool.d/},
# apps/, logs/NAME.log, run/bus, run/php/php-fpm.sock, state/.
# Needs root (mount namespace, cgroup2 writes) and scripts/setup (packages and the venv).
set -euo pipefail

LAB_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$LAB_SRC")
VENV=${MEDIC_LAB_VENV:-$REPO/.venv-lab}
NGINX=/usr/sbin/nginx
NODE=/usr/bin/node
SYSTEMD=/lib/systemd/systemd
UP_TIMEOUT=${LAB_UP_TIMEOUT:-30}
MARKER=.nginx-medic-lab
UNITS=(nginx.service api.service web.service php-fpm.service django.service)
PHP_FPM=/usr/sbin/php-fpm8.2

say() { printf 'lab.sh: %s\n' "$*" >&2; }
die() {
    printf 'lab.sh: error: %s\n' "$*" >&2
    exit 1
}
usage() {
    sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# An absolute, normalised lab path without characters that would need quoting in unit files,
# nginx.conf or sed.
norm_dir() {
    local dir=$1
    case $dir in
    /*) ;;
    *) die "DIR \`$dir\` must be an absolute path" ;;
    esac
    dir=$(realpath -m -- "$dir")
    [ "$dir" != / ] || die "DIR must not be \`/\`"
    [[ $dir =~ ^[A-Za-z0-9/._+-]+$ ]] ||
        die "DIR \`$dir\` may hold only letters, digits and \`/._+-\` (it is written into unit files and nginx.conf)"
    printf '%s\n' "$dir"
}

# The cgroup2 mount: /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one.
cg2_root() {
    if [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then
        echo /sys/fs/cgroup
    elif [ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then
        echo /sys/fs/cgroup/unified
    else
        return 1
    fi
}

# The lab's cgroup2 group, a name derived from DIR alone so `down` finds it even without DIR.
group_name() { printf 'nginx-medic-lab-%s\n' "$(printf %s "$1" | sha256sum | cut -c1-16)"; }

lab_vars() {
    DIR=$1
    GROUP=$(group_name "$DIR")
    CG2=$(cg2_root) || CG2=
    CGDIR=${CG2:+$CG2/$GROUP}
}

# systemctl --user against the lab's manager (bounded, so a wedged manager cannot hang us).
sctl() {
    env XDG_RUNTIME_DIR="$DIR/run" DBUS_SESSION_BUS_ADDRESS="unix:path=$DIR/run/bus" \
        timeout "${SCTL_TIMEOUT:-20}" systemctl --user "$@"
}

# True while PID exists and is neither a zombie nor dead (a killed process may linger as a zombie).
alive() {
    local stat state
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    state=${state%% *}
    [ "$state" != Z ] && [ "$state" != X ]
}

# True when PID is inside the lab's cgroup2 group (guards every kill against recycled PIDs).
in_group() {
    [ -n "$CGDIR" ] && grep -q "^0::/$GROUP\(/\|\$\)" "/proc/$1/cgroup" 2>/dev/null
}

group_pids() {
    [ -n "$CGDIR" ] && [ -d "$CGDIR" ] || return 0
    find "$CGDIR" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un
}

# Waits up to $1 seconds until none of the given PIDs is alive.
wait_gone() {
    local deadline=$((SECONDS + $1)) pid
    shift
    for pid in "$@"; do
        while alive "$pid"; do
            [ "$SECONDS" -lt "$deadline" ] || return 1
            sleep 0.05
        done
    done
}

# True when something listens on 127.0.0.1:PORT (or any address) per /proc/net/tcp{,6}.
listening() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v want=":$hex" 'FNR > 1 && substr($2, length($2) - 4) == want && $4 == "0A" { found = 1 }
        END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

port_in_use() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v want=":$hex" 'FNR > 1 && substr($2, length($2) - 4) == want { found = 1 }
        END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

render() {
    local src=$1 dst=$2
    sed -e "s|@DIR@|$DIR|g" -e "s|@REPO@|$REPO|g" -e "s|@VENV@|$VENV|g" -e "s|@NODE@|$NODE|g" \
        -e "s|@API_SITE_PORT@|$((BASE))|g" -e "s|@WEB_SITE_PORT@|$((BASE + 1))|g" \
        -e "s|@API_PORT@|$((BASE + 10))|g" -e "s|@WEB_PORT@|$((BASE + 11))|g" \
        -e "s|@PHP_SITE_PORT@|$((BASE + 2))|g" -e "s|@DJANGO_SITE_PORT@|$((BASE + 3))|g" \
        -e "s|@DJANGO_PORT@|$((BASE + 13))|g" -e "s|@POOL_USER_LINES@|$POOL_USER_LINES|g" \
        -e "s|@USER_LINE@|$USER_LINE|g" "$src" >"$dst"
}

# What went wrong with UNIT, for the error message of a failed `up`.
explain_unit() {
    local unit=$1 name=${1%.service}
    printf -- '--- %s: ' "$unit" >&2
    SCTL_TIMEOUT=5 sctl show -p ActiveState -p SubState -p Result -p ExecMainStatus "$unit" 2>&1 |
        paste -sd' ' >&2 || true
    if [ -s "$DIR/logs/$name.log" ]; then
        printf -- '--- tail of %s\n' "$DIR/logs/$name.log" >&2
        tail -n 20 "$DIR/logs/$name.log" >&2
    fi
    if [ "$name" = nginx ] && [ -s "$DIR/nginx/logs/error.log" ]; then
        printf -- '--- tail of %s\n' "$DIR/nginx/logs/error.log" >&2
        tail -n 20 "$DIR/nginx/logs/error.log" >&2
    fi
}

fail_up() {
    printf 'lab.sh: error: %s\n' "$1" >&2
    shift
    local unit
    for unit in "$@"; do explain_unit "$unit"; done
    say "the half-built lab is left for inspection: end it with \`lab/lab.sh down $DIR\`"
    exit 1
}

cmd_up() {
    [ $# -eq 2 ] || usage
    DIR=$(norm_dir "$1")
    lab_vars "$DIR"
    BASE=$2
    if ! [[ $BASE =~ ^[0-9]+$ ]] || [ "$BASE" -lt 18000 ] || [ "$BASE" -gt 65516 ]; then
        die "BASE_PORT \`$BASE\` must be a number from 18000 to 65516 (the lab uses BASE..BASE+19)"
    fi
    [ "$(id -u)" = 0 ] ||
        die "the lab needs root: its systemd user manager is fenced in a mount namespace and a cgroup2 group"
    [ -n "$CG2" ] ||
        die "no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified: a systemd user manager cannot be fenced here"
    local bin
    for bin in "$NGINX" "$NODE" "$SYSTEMD" "$PHP_FPM" "$VENV/bin/uvicorn" "$VENV/bin/gunicorn"; do
        [ -x "$bin" ] || die "\`$bin\` is missing: run scripts/setup as root (the venv may be moved with MEDIC_LAB_VENV)"
    done
    for bin in systemctl setsid unshare; do
        command -v "$bin" >/dev/null || die "\`$bin\` is missing: run scripts/setup as root"
    done
    if [ -n "$(group_pids)" ]; then
        die "a lab is already running in \`$DIR\` (cgroup $CGDIR): end it with \`lab/lab.sh down $DIR\`"
    fi
    if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
        die "\`$DIR\` exists and is not empty: pick another DIR or end the old lab with \`lab/lab.sh down $DIR\`"
    fi
    local port
    for port in $(seq "$BASE" $((BASE + 19))); do
        ! port_in_use "$port" || die "port $port (in BASE..BASE+19 of $BASE) is in use: pick another BASE_PORT"
    done

    local started=$SECONDS
    # --- files ---
    mkdir -p "$DIR"
    chmod 0755 "$DIR" # an unprivileged nginx worker must traverse it
    : >"$DIR/$MARKER"
    mkdir -p "$DIR"/{config/systemd/user,logs,apps,state,home,data,cache,xdg-state} \
        "$DIR"/nginx/{logs,tmp,sites-enabled} "$DIR"/php/pool.d "$DIR"/apps/php
    mkdir "$DIR/run"
    chmod 0711 "$DIR/run" # workers of other users may need to reach sockets in it
    mkdir -m 0755 "$DIR/run/php" # php-fpm's socket; nginx's workers traverse it
    if [ "$(id -u)" = 0 ] && id -u www-data >/dev/null 2>&1; then
        USER_LINE='user www-data;'
        POOL_USER_LINES='user = www-data\ngroup = www-data'
    else
        USER_LINE='# (not root: workers run as the master'"'"'s user)'
        POOL_USER_LINES='; (not root: the pool runs as the master'"'"'s user)'
    fi
    render "$LAB_SRC/conf/nginx.conf.in" "$DIR/nginx/nginx.conf"
    render "$LAB_SRC/conf/api.conf.in" "$DIR/nginx/sites-enabled/api.conf"
    render "$LAB_SRC/conf/web.conf.in" "$DIR/nginx/sites-enabled/web.conf"
    render "$LAB_SRC/conf/php.conf.in" "$DIR/nginx/sites-enabled/php.conf"
    render "$LAB_SRC/conf/django.conf.in" "$DIR/nginx/sites-enabled/django.conf"
    render "$LAB_SRC/conf/php-fpm.conf.in" "$DIR/php/php-fpm.conf"
    render "$LAB_SRC/conf/php-pool.conf.in" "$DIR/php/pool.d/www.conf"
    render "$LAB_SRC/conf/django.env.in" "$DIR/config/django.env"
    render "$LAB_SRC/conf/api.env.in" "$DIR/config/api.env"
    render "$LAB_SRC/conf/web.env.in" "$DIR/config/web.env"
    render "$LAB_SRC/conf/medic.yaml.in" "$DIR/medic.yaml"
    local unit
    for unit in "${UNITS[@]}"; do
        render "$LAB_SRC/units/$unit.in" "$DIR/config/systemd/user/$unit"
    done
    cp "$LAB_SRC/apps/api.py" "$LAB_SRC/apps/web.js" "$DIR/apps/"
    cp "$LAB_SRC/apps/php/index.php" "$DIR/apps/php/"
    cp -r "$LAB_SRC/apps/django" "$DIR/apps/"
    printf '%s\n' "$BASE" >"$DIR/base_port"
    printf '%s\n' "$CGDIR" >"$DIR/cgroup"
    "$NGINX" -t -q -p "$DIR/nginx/" -c "$DIR/nginx/nginx.conf" -e "$DIR/nginx/logs/error.log" ||
        fail_up "nginx rejects the generated $DIR/nginx/nginx.conf"

    # --- the manager, fenced as SYSTEMD-LAB.md says ---
    # A clean environment: units inherit it (PATH is reset by the manager anyway), and nothing
    # of the caller's (NOTIFY_SOCKET, another DBUS_SESSION_BUS_ADDRESS, ...) leaks in.
    # setsid does not fork here (a background job of a non-interactive shell leads no process
    # group) and unshare without --fork execs, so $! ends up as the manager's own PID.
    # shellcheck disable=SC2016 # the script of the inner sh expands its own variables
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        HOME="$DIR/home" USER=root LOGNAME=root SHELL=/bin/sh \
        XDG_RUNTIME_DIR="$DIR/run" XDG_CONFIG_HOME="$DIR/config" XDG_DATA_HOME="$DIR/data" \
        XDG_CACHE_HOME="$DIR/cache" XDG_STATE_HOME="$DIR/xdg-state" \
        DBUS_SESSION_BUS_ADDRESS="unix:path=$DIR/run/bus" \
        setsid unshare --mount --propagation private sh -c '
            set -e
            CG2=$1 GROUP=$2 SYSTEMD=$3
            mkdir -p /run/systemd && mount -t tmpfs -o mode=0755 tmpfs /run/systemd
            mkdir /run/systemd/system
            mkdir -p "$CG2/$GROUP" && echo $$ >"$CG2/$GROUP/cgroup.procs"
            [ "$CG2" = /sys/fs/cgroup ] || mount --bind "$CG2" /sys/fs/cgroup
            exec "$SYSTEMD" --user' sh "$CG2" "$GROUP" "$SYSTEMD" \
        </dev/null >>"$DIR/logs/systemd.log" 2>&1 &
    local mpid=$!
    printf '%s\n' "$mpid" >"$DIR/manager.pid"
    local want_exe deadline=$((SECONDS + UP_TIMEOUT))
    want_exe=$(readlink -f "$SYSTEMD")
    until [ "$(readlink "/proc/$mpid/exe" 2>/dev/null)" = "$want_exe" ] && in_group "$mpid"; do
        if ! alive "$mpid"; then
            tail -n 20 "$DIR/logs/systemd.log" >&2 || true
            fail_up "the systemd user manager (pid $mpid) exited during start-up; log: $DIR/logs/systemd.log"
        fi
        [ "$SECONDS" -lt "$deadline" ] ||
            fail_up "pid $mpid did not become $want_exe inside cgroup $CGDIR within ${UP_TIMEOUT}s"
        sleep 0.05
    done

    local state=
    until [ "$state" = running ] || [ "$state" = degraded ]; do
        alive "$mpid" || {
            tail -n 20 "$DIR/logs/systemd.log" >&2 || true
            fail_up "the systemd user manager (pid $mpid) died; log: $DIR/logs/systemd.log"
        }
        [ "$SECONDS" -lt "$deadline" ] ||
            fail_up "the systemd user manager did not reach running within ${UP_TIMEOUT}s (SystemState \`$state\`)"
        sleep 0.1
        state=$(SCTL_TIMEOUT=5 sctl show -p SystemState --value 2>/dev/null) || state=
    done

    # --- units ---
    sctl start "${UNITS[@]}" 2>&1 | sed 's/^/lab.sh: systemctl: /' >&2 || true
    local name
    for unit in "${UNITS[@]}"; do
        case $unit in
        nginx.service) set -- "$BASE" $((BASE + 1)) $((BASE + 2)) $((BASE + 3)) ;;
        api.service) set -- $((BASE + 10)) ;;
        web.service) set -- $((BASE + 11)) ;;
        php-fpm.service) set -- "$DIR/run/php/php-fpm.sock" ;;
        django.service) set -- $((BASE + 13)) ;;
        esac
        until [ "$(SCTL_TIMEOUT=5 sctl is-active "$unit" 2>/dev/null)" = active ] && all_listening "$@"; do
            state=$(SCTL_TIMEOUT=5 sctl is-active "$unit" 2>/dev/null) || true
            case $state in
            failed | inactive) fail_up "$unit is $state instead of active" "$unit" ;;
            esac
            [ "$SECONDS" -lt "$deadline" ] ||
                fail_up "$unit did not get active and listening on port(s) $* within ${UP_TIMEOUT}s" "$unit"
            sleep 0.05
        done
    done

    say "lab up in $DIR in $((SECONDS - started))s (manager pid $mpid, cgroup $CGDIR)"
    for name in "api site:$BASE" "web site:$((BASE + 1))" "php site:$((BASE + 2))" \
        "django site:$((BASE + 3))" "api backend:$((BASE + 10))" "web backend:$((BASE + 11))" \
        "django backend:$((BASE + 13))"; do
        say "  ${name%%:*}: http://127.0.0.1:${name##*:}/"
    done
    say "  config: $DIR/medic.yaml"
}

# True when every port (or unix socket path) listens.
all_listening() {
    local port
    for port in "$@"; do
        case $port in
        /*) [ -S "$port" ] || return 1 ;;
        *) listening "$port" || return 1 ;;
        esac
    done
}

cmd_down() {
    [ $# -eq 1 ] || usage
    DIR=$(norm_dir "$1")
    lab_vars "$DIR"
    if [ -d "$DIR" ] && [ ! -e "$DIR/$MARKER" ] && [ -z "$(ls -A "$DIR")" ]; then
        rmdir -- "$DIR" # reserved by a caller, but `up` never got to it
    elif [ -e "$DIR" ] && [ ! -e "$DIR/$MARKER" ]; then
        die "\`$DIR\` is no lab (no $MARKER in it): refusing to remove it"
    fi

    # 1. gently: stop the units, then SIGTERM the manager (a user manager then starts exit.target)
    local mpid busd=
    mpid=$(cat "$DIR/manager.pid" 2>/dev/null) || mpid=
    if [[ $mpid =~ ^[0-9]+$ ]] && alive "$mpid" && in_group "$mpid"; then
        busd=$(SCTL_TIMEOUT=5 sctl show -p MainPID --value dbus.service 2>/dev/null) || busd=
        SCTL_TIMEOUT=15 sctl stop "${UNITS[@]}" >/dev/null 2>&1 || true
        kill -TERM "$mpid" 2>/dev/null || true
        if ! wait_gone 10 "$mpid"; then
            say "the manager (pid $mpid) ignored SIGTERM for 10s: killing it"
            kill -KILL "$mpid" 2>/dev/null || true
        fi
        if [[ $busd =~ ^[1-9][0-9]*$ ]] && alive "$busd" && in_group "$busd"; then
            kill -TERM "$busd" 2>/dev/null || true
        fi
    fi

    # 2. whatever is left in the group, recursively, until it is really gone
    if [ -n "$CGDIR" ] && [ -d "$CGDIR" ]; then
        local pids round
        for round in $(seq 100); do
            mapfile -t pids < <(group_pids)
            [ "${#pids[@]}" -gt 0 ] || break
            if [ "$round" = 1 ]; then
                kill -TERM "${pids[@]}" 2>/dev/null || true
                wait_gone 3 "${pids[@]}" || true
                continue
            fi
            if [ -e "$CGDIR/cgroup.kill" ]; then
                echo 1 >"$CGDIR/cgroup.kill" 2>/dev/null || true
            fi
            kill -KILL "${pids[@]}" 2>/dev/null || true
            wait_gone 1 "${pids[@]}" || true
        done
        mapfile -t pids < <(group_pids)
        [ "${#pids[@]}" -eq 0 ] || die "processes left in $CGDIR after SIGKILL: ${pids[*]}"
        [ -z "$busd" ] || wait_gone 5 "$busd" || true
        [ -z "$mpid" ] || wait_gone 5 "$mpid" || true
        # 3. the cgroup dirs, bottom-up (an emptied group may need a moment before rmdir works)
        local _
        for _ in $(seq 50); do
            find "$CGDIR" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [ -d "$CGDIR" ] || break
            sleep 0.1
        done
        [ ! -d "$CGDIR" ] || die "cannot remove the cgroup $CGDIR"
    fi

    # 4. the files
    if [ -e "$DIR" ]; then
        rm -rf -- "$DIR"
    fi
    say "lab in $DIR is down"
}

cmd_env() {
    [ $# -eq 1 ] || usage
    DIR=$(norm_dir "$1")
    lab_vars "$DIR"
    printf 'export XDG_RUNTIME_DIR=%s\n' "$DIR/run"
    printf 'export DBUS_SESSION_BUS_ADDRESS=%s\n' "unix:path=$DIR/run/bus"
    printf 'export XDG_CONFIG_HOME=%s\n' "$DIR/config"
}

case ${1:-} in
up | down | env)
    cmd=$1
    shift
    "cmd_$cmd" "$@"
    ;;
*) usage ;;
esac
