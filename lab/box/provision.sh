#!/usr/bin/env bash
# lab/box/provision.sh — what a box contains, run INSIDE a booted box as root (scripts/box and
# tests/support/system_box.rs both run it through `nsenter -t PID1 -a`; the checkout is visible
# inside at the same path through the overlay's lower layer). One step per subcommand, so a
# caller can time each:
#
#   provision.sh backends VENV   the apps under /srv/APP, their system units, Debian-style nginx
#                                sites, all started and answering 200 through nginx
#   provision.sh install DEB     `dpkg -i DEB` (the machine's policy-rc.d keeps it from starting
#                                anything), then `daemon: { mode: apply }` in medic.yaml
#   provision.sh start           `systemctl start nginx-medic` from the shipped unit, unchanged
#
# | site (nginx)   | backend                   | unit              | where its address is set     |
# |----------------|---------------------------|-------------------|------------------------------|
# | 127.0.0.1:8081 | FastAPI/uvicorn :8000     | api.service       | /etc/default/api HOST, PORT  |
# | 127.0.0.1:8082 | Node.js :8001 (user web)  | web.service       | /srv/web/.env HOST, PORT     |
# | 127.0.0.1:8083 | Django/gunicorn :8002     | django.service    | ExecStart --bind             |
# | 127.0.0.1:8084 | Django runserver :8003    | runserver.service | ExecStart ADDR:PORT          |
# | 127.0.0.1:8085 | /run/php/php8.2-fpm.sock  | php8.2-fpm.service| Debian's pool www.conf       |
# Plus Debian's own `default` site on port 80.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TIMEOUT=${BOX_UP_TIMEOUT:-30}
BACKENDS=(api.service web.service django.service runserver.service)
SITES=(api web django runserver php)
# site name -> the port nginx listens on for it, and the backend's own port (0: a unix socket)
declare -A SITE_PORT=([api]=8081 [web]=8082 [django]=8083 [runserver]=8084 [php]=8085)
declare -A BACKEND_PORT=([api]=8000 [web]=8001 [django]=8002 [runserver]=8003 [php]=0)

say() { printf 'provision: %s\n' "$*" >&2; }
die() {
    printf 'provision: error: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "run as root inside the box"
[ "$(readlink -f /proc/1/exe)" = "$(readlink -f /lib/systemd/systemd)" ] ||
    die "PID 1 is not systemd: run this inside a booted box (\`scripts/box up NAME\`), never on the machine itself"

# The HTTP status of GET / on 127.0.0.1:PORT, 000 when nothing answers.
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/" || true; }

# Waits until `systemctl is-active UNIT` says active; fails with the unit's state and journal.
wait_active() {
    local unit=$1 deadline=$((SECONDS + TIMEOUT)) state
    while state=$(systemctl is-active "$unit" 2>/dev/null || true) && [ "$state" != active ]; do
        if [ "$state" = failed ] || [ "$SECONDS" -ge "$deadline" ]; then
            journalctl -u "$unit" -n 30 --no-pager >&2 || true
            die "$unit is \`$state\`, not active"
        fi
        sleep 0.05
    done
}

# Waits until GET / on PORT answers 200; fails with what it answered and nginx's error log.
wait_200() {
    local port=$1 what=$2 deadline=$((SECONDS + TIMEOUT)) got
    while got=$(status "$port") && [ "$got" != 200 ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 /var/log/nginx/error.log >&2 || true
            die "$what (127.0.0.1:$port) answers \`$got\`, not 200, after ${TIMEOUT}s"
        fi
        sleep 0.05
    done
}

cmd_backends() {
    [ $# -eq 1 ] || die "usage: provision.sh backends VENV"
    local venv=$1 apps=$HERE/../apps unit site
    [ -x "$venv/bin/uvicorn" ] && [ -x "$venv/bin/gunicorn" ] ||
        die "no lab venv at \`$venv\` (uvicorn, gunicorn): run scripts/setup on the machine"
    [ -x /usr/bin/node ] || die "/usr/bin/node is missing: run scripts/setup on the machine"

    # the apps, each in /srv/APP
    install -d -m 0755 /srv/api /srv/django /srv/php
    install -m 0644 "$apps/api.py" /srv/api/
    cp -r "$apps/django/." /srv/django/
    chmod -R u=rwX,go=rX /srv/django
    install -m 0644 "$apps/php/index.php" /srv/php/
    # the Node app belongs to its own user, .env included
    id -u web >/dev/null 2>&1 ||
        useradd --system --user-group --home-dir /srv/web --no-create-home --shell /usr/sbin/nologin web
    install -d -m 0755 -o web -g web /srv/web
    install -m 0644 -o web -g web "$apps/web.js" /srv/web/
    install -m 0640 -o web -g web "$HERE/files/web.env" /srv/web/.env
    install -m 0644 "$HERE/files/default-api" /etc/default/api

    # their units, in /etc/systemd/system as an administrator writes them
    for unit in "${BACKENDS[@]}"; do
        sed -e "s|@VENV@|$venv|g" "$HERE/units/$unit.in" >"/etc/systemd/system/$unit"
        chmod 0644 "/etc/systemd/system/$unit"
    done
    systemctl daemon-reload
    systemctl enable --quiet "${BACKENDS[@]}"
    systemctl start "${BACKENDS[@]}" php8.2-fpm.service
    for unit in "${BACKENDS[@]}" php8.2-fpm.service; do wait_active "$unit"; done

    # Debian-style sites: sites-available/NAME, a symlink in sites-enabled/
    for site in "${SITES[@]}"; do
        install -m 0644 "$HERE/sites/$site" "/etc/nginx/sites-available/$site"
        ln -sfn "../sites-available/$site" "/etc/nginx/sites-enabled/$site"
    done
    nginx -t -q || die "nginx rejects the box's sites"
    systemctl reload-or-restart nginx.service
    wait_active nginx.service

    local port
    for site in "${SITES[@]}"; do
        port=${BACKEND_PORT[$site]}
        [ "$port" = 0 ] || wait_200 "$port" "the $site backend"
        wait_200 "${SITE_PORT[$site]}" "the $site site"
    done
    wait_200 80 "Debian's default site"
    say "backends up: ${BACKENDS[*]} php8.2-fpm.service; sites on 127.0.0.1:8081-8085 and :80"
}

cmd_install() {
    [ $# -eq 1 ] || die "usage: provision.sh install DEB"
    local deb=$1 have
    [ -f "$deb" ] || die "no package at \`$deb\`: build one with scripts/package"
    have=$(dpkg-query -W -f='${db:Status-Abbrev}' nginx-medic 2>/dev/null || true)
    case $have in
    "" | un*) ;;
    *) die "nginx-medic is already installed in the box (\`$have\`; the machine's own install shows through the lower layer): purge it on the machine first" ;;
    esac
    [ -x /usr/sbin/policy-rc.d ] || die "no /usr/sbin/policy-rc.d in the box: \`dpkg -i\` would start the service"
    # man-db's trigger would rebuild the whole man page index (~8 s of a box's start); the index
    # is all it skips
    rm -f /var/lib/man-db/auto-update
    DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >&2
    # as an administrator opts in: the conffile's defaults stay, commented, above
    printf '\n# the box: heal, not only report (lab/box/provision.sh)\ndaemon:\n  mode: apply\n' \
        >>/etc/nginx-medic/medic.yaml
    [ "$(systemctl is-active nginx-medic.service 2>/dev/null || true)" != active ] ||
        die "dpkg -i started nginx-medic.service although policy-rc.d forbids it"
    say "installed $(dpkg-query -W -f='${Package} ${Version}' nginx-medic), mode: apply"
}

cmd_start() {
    [ $# -eq 0 ] || die "usage: provision.sh start"
    systemctl start nginx-medic.service
    wait_active nginx-medic.service
    say "nginx-medic.service is active: $(systemctl show -p StatusText --value nginx-medic.service)"
}

case ${1:-} in
backends | install | start)
    cmd=$1
    shift
    "cmd_$cmd" "$@"
    ;;
*)
    sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
