#!/usr/bin/env bash
# packaging/test-install.sh DEB — installs the nginx-medic package on this machine for real,
# checks it, reinstalls it over an edited conffile, purges it and checks that nothing is left.
#
# Run as root on Debian 12. Safe on a machine whose PID 1 is not systemd (containers, CI): the
# maintainer scripts skip systemctl when /run/systemd/system is missing, and for the duration a
# policy-rc.d forbids starting any service anyway. Whatever happens, on exit it purges the
# package, restores the policy-rc.d it found, and puts back an /etc/nginx-medic or
# /var/lib/nginx-medic that existed before. It refuses to run when nginx-medic is installed.
set -euo pipefail

PKG=nginx-medic
POLICY=/usr/sbin/policy-rc.d
UNIT=/usr/lib/systemd/system/$PKG.service
# Owned by the package's scripts, not by dpkg: they must be gone after a purge too.
SCRIPT_PATHS=(/var/lib/nginx-medic /etc/nginx-medic
    "/etc/systemd/system/multi-user.target.wants/$PKG.service"
    "/var/lib/systemd/deb-systemd-helper-enabled/$PKG.service.dsh-also"
    "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/$PKG.service"
    "/var/lib/systemd/deb-systemd-helper-masked/$PKG.service")
# Exposure above this (x10, as systemd-analyze takes it) means the unit's hardening regressed.
MAX_EXPOSURE=30

say() { printf 'test-install: %s\n' "$*"; }
die() {
    printf 'test-install: FAIL: %s\n' "$*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: $0 DEB (one file; \`scripts/package\` prints it)"
[ "$(id -u)" = 0 ] || die "run as root: it installs and purges a package (try \`sudo $0 $1\`)"
[ -f "$1" ] || die "\`$1\` is not a file"
DEB=$(realpath "$1")
status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$PKG" 2>/dev/null || true)
case $status in
"" | un*) ;;
*) die "$PKG is already installed (\`$status\`): purge it first (\`dpkg -P $PKG\`), this test would" ;;
esac

export DEBIAN_FRONTEND=noninteractive
WORK=$(mktemp -d /tmp/nginx-medic-test-install.XXXXXX)
POLICY_SAVED=
POLICY_PLACED=
declare -a MOVED=()

cleanup() {
    local rc=$?
    set +e
    if dpkg-query -W -f='${db:Status-Abbrev}\n' "$PKG" 2>/dev/null | grep -qv '^un'; then
        say "cleanup: purging $PKG"
        dpkg -P "$PKG" >"$WORK/cleanup-purge.log" 2>&1 || cat "$WORK/cleanup-purge.log" >&2
    fi
    local path
    for path in "${MOVED[@]}"; do
        rm -rf "$path"
        mv "$WORK/saved$path" "$path" && say "cleanup: restored $path"
    done
    if [ -n "$POLICY_PLACED" ]; then
        if [ -n "$POLICY_SAVED" ]; then mv -f "$POLICY_SAVED" "$POLICY"; else rm -f "$POLICY"; fi
    fi
    rm -rf "$WORK"
    [ $rc -eq 0 ] || printf 'test-install: FAILED (exit %s)\n' "$rc" >&2
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the machine, prepared ------------------------------------------------------------------

# No service may start while the test runs (exit 101: "action forbidden by policy").
if [ -e "$POLICY" ]; then
    POLICY_SAVED=$WORK/policy-rc.d
    cp -a "$POLICY" "$POLICY_SAVED"
fi
POLICY_PLACED=1
printf '#!/bin/sh\n# written by nginx-medic packaging/test-install.sh for its duration\nexit 101\n' >"$POLICY"
chmod 0755 "$POLICY"

# What an earlier install or a developer left: out of the way, back at the end.
for path in /etc/nginx-medic /var/lib/nginx-medic; do
    if [ -e "$path" ]; then
        mkdir -p "$WORK/saved$(dirname "$path")"
        mv "$path" "$WORK/saved$path"
        MOVED+=("$path")
        say "moved $path aside for the test"
    fi
done

# The tools the checks use.
need=()
command -v man >/dev/null || need+=(man-db)
command -v lintian >/dev/null || need+=(lintian)
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >"$WORK/apt-tools.log" 2>&1 ||
        { cat "$WORK/apt-tools.log" >&2; die "cannot install ${need[*]}"; }
fi

# Images made for containers often drop man pages at unpack time (path-exclude in
# /etc/dpkg/dpkg.cfg.d/); let this package's through, or `man -w` could never pass.
DPKG_OPTS=()
if grep -rqsE '^path-exclude[= ]+/usr/share/man' /etc/dpkg/dpkg.cfg.d/; then
    say "dpkg excludes /usr/share/man here: including nginx-medic's pages for this test"
    DPKG_OPTS=(--path-include=/usr/share/man/man1/nginx-medic*)
fi
APT_DPKG_OPTS=()
for o in "${DPKG_OPTS[@]}"; do APT_DPKG_OPTS+=(-o "DPkg::Options::=$o"); done

# --- what the package holds, and what of it existed before ---------------------------------

# `dpkg-deb -c` lines end in `./path` (`./path -> target` for links); keep absolute paths.
dpkg-deb -c "$DEB" | awk '{ p = $6; sub(/^\./, "", p); sub(/\/$/, "", p); if (p != "") print substr($1, 1, 1), p }' >"$WORK/contents"
grep -q "^- $UNIT\$" "$WORK/contents" || die "the package has no \`$UNIT\`"
while read -r kind path; do
    if [ "$kind" = d ] && [ -d "$path" ]; then printf '%s\n' "$path"; fi
done <"$WORK/contents" >"$WORK/dirs-before"
while read -r kind path; do
    if [ "$kind" != d ] && [ -e "$path" ]; then die "\`$path\` exists before the install: whose is it?"; fi
done <"$WORK/contents"

# --- install ---------------------------------------------------------------------------------

say "lintian $(basename "$DEB")"
if ! lintian "$DEB" >"$WORK/lintian.log" 2>&1; then
    cat "$WORK/lintian.log" >&2
    die "lintian reports errors"
fi
grep -v '^running with root privileges' "$WORK/lintian.log" | sed 's/^/  /' || true

say "apt-get install ./$(basename "$DEB")"
t0=$SECONDS
apt-get install -y -q --no-install-recommends "${APT_DPKG_OPTS[@]}" "$DEB" </dev/null >"$WORK/install.log" 2>&1 ||
    { cat "$WORK/install.log" >&2; die "the install failed"; }
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$PKG")" = "ii " ] || die "$PKG is not fully installed"
say "installed in $((SECONDS - t0)) s"

# --- checks ----------------------------------------------------------------------------------

want_version=$(dpkg-deb -f "$DEB" Version)
upstream=${want_version%-*}
# The test package (`scripts/package --failpoints`, version VERSION+failpoints-1) has fail points;
# the release package has none: not on its `--version` line, not a name of one in its bytes.
case $upstream in
*+failpoints) want="nginx-medic ${upstream%+failpoints} (features: failpoints)" ;;
*) want="nginx-medic $upstream" ;;
esac
got=$(nginx-medic --version)
[ "$got" = "$want" ] || die "\`nginx-medic --version\` says \`$got\`, the package is $want_version (want \`$want\`)"
say "ok: $got"
FAIL_POINTS=(daemon.loop daemon.evaluate txn.after-backup fs.after-write fs.after-rename
    fs.before-dir-fsync systemd.job-queued) # src/failpoint.rs
found=()
for name in "${FAIL_POINTS[@]}"; do
    if grep -qaF "$name" /usr/bin/nginx-medic; then found+=("$name"); fi
done
case $upstream in
*+failpoints)
    [ ${#found[@]} = ${#FAIL_POINTS[@]} ] || die "the test binary lacks fail points: has only ${found[*]:-none}"
    say "ok: a test build, with all ${#FAIL_POINTS[@]} fail points"
    ;;
*)
    [ ${#found[@]} = 0 ] || die "the release binary has fail points: ${found[*]}"
    say "ok: no fail points in the release binary (none of ${#FAIL_POINTS[@]} names in it)"
    ;;
esac

while read -r kind path; do
    [ "$kind" = d ] || [ -e "$path" ] || die "\`$path\` is in the package but not on disk"
done <"$WORK/contents"

awk '$2 ~ /^\/usr\/share\/man\/man1\// { n = $2; sub(/.*\//, "", n); sub(/\.1\.gz$/, "", n); print n }' \
    "$WORK/contents" >"$WORK/man-pages"
while read -r page; do
    where=$(man -w "$page") || die "\`man -w $page\` finds no page"
    MANWIDTH=80 man "$page" 2>"$WORK/man.err" | grep -q 'nginx-medic' || die "\`man $page\` renders nothing"
    [ ! -s "$WORK/man.err" ] || { cat "$WORK/man.err" >&2; die "\`man $page\` warns"; }
    say "ok: man $page ($where)"
done <"$WORK/man-pages"
man -w nginx-medic >/dev/null || die "no \`nginx-medic\` man page"

bash -n /usr/share/bash-completion/completions/nginx-medic || die "the bash completion does not parse"
# shellcheck disable=SC1091 # the file just installed
(
    . /usr/share/bash-completion/completions/nginx-medic
    spec=$(complete -p nginx-medic)
    function=${spec#*-F }
    function=${function%% *}
    COMP_WORDS=(nginx-medic f)
    COMP_CWORD=1
    "$function" nginx-medic f nginx-medic
    [ "${COMPREPLY[*]}" = facts ]
) || die "the bash completion does not complete \`nginx-medic f\` to \`facts\`"
for f in /usr/share/zsh/vendor-completions/_nginx-medic /usr/share/fish/vendor_completions.d/nginx-medic.fish; do
    [ -s "$f" ] || die "\`$f\` is missing or empty"
done
say "ok: completions (bash completes \`nginx-medic f\` to \`facts\`)"

dpkg-query -W -f='${Conffiles}\n' "$PKG" | grep -q '^ /etc/nginx-medic/medic.yaml ' ||
    die "/etc/nginx-medic/medic.yaml is not a conffile"
[ "$(stat -c %a /var/lib/nginx-medic)" = 700 ] || die "/var/lib/nginx-medic is not 0700"
[ -d /etc/nginx-medic/playbooks ] || die "/etc/nginx-medic/playbooks is missing"
say "ok: conffile, /var/lib/nginx-medic (0700), /etc/nginx-medic/playbooks/"

# The shipped file (every key commented out) and its defaults, uncommented, both load. `facts`
# reads the configuration first; exit 3 means it was rejected.
grep -E '^# ([a-z_]+:|  )' /etc/nginx-medic/medic.yaml | grep -vE '^# +\[' |
    sed 's/^# //' >"$WORK/uncommented.yaml"
grep -q '^nginx:' "$WORK/uncommented.yaml" || die "found no commented-out defaults in medic.yaml"
for conf in /etc/nginx-medic/medic.yaml "$WORK/uncommented.yaml"; do
    rc=0
    nginx-medic --config "$conf" facts --json >/dev/null 2>"$WORK/facts.err" || rc=$?
    [ "$rc" != 3 ] || { cat "$WORK/facts.err" >&2; die "nginx-medic rejects \`$conf\`"; }
done
say "ok: medic.yaml and its defaults, uncommented, load"

# The shipped playbooks load with the shipped templates, through the installed configuration.
shipped=$(grep -c '^- /usr/share/nginx-medic/playbooks/.*\.yaml$' "$WORK/contents" || true)
if nginx-medic playbooks check --help >/dev/null 2>&1; then
    out=$(nginx-medic playbooks check 2>&1) || { printf '%s\n' "$out" >&2; die "the shipped playbooks do not check"; }
    printf '%s\n' "$out" | grep -q "^ok: $shipped playbook(s) valid" ||
        die "\`nginx-medic playbooks check\` says \`$out\`, $shipped are shipped"
    say "ok: the $shipped shipped playbooks check"
else
    say "skipped: \`nginx-medic playbooks check\` (not in this build)"
fi

[ -L /etc/systemd/system/multi-user.target.wants/$PKG.service ] || die "the unit was not enabled"
systemd-analyze verify "$UNIT" >"$WORK/verify.log" 2>&1 || { cat "$WORK/verify.log" >&2; die "systemd-analyze verify $UNIT"; }
exposure=$(systemd-analyze security --offline=true "$UNIT" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
systemd-analyze security --offline=true --threshold=$MAX_EXPOSURE "$UNIT" >/dev/null 2>&1 ||
    die "systemd-analyze security: exposure $exposure is above $((MAX_EXPOSURE / 10)).$((MAX_EXPOSURE % 10))"
say "ok: unit enabled, systemd-analyze verify clean, security exposure $exposure"

# --- the conffile survives a reinstall -------------------------------------------------------

marker="# edited by test-install.sh $$"
printf '%s\n' "$marker" >>/etc/nginx-medic/medic.yaml
dpkg -i "${DPKG_OPTS[@]}" "$DEB" </dev/null >"$WORK/reinstall.log" 2>&1 ||
    { cat "$WORK/reinstall.log" >&2; die "the reinstall failed"; }
grep -qxF "$marker" /etc/nginx-medic/medic.yaml || die "the reinstall lost the edit of medic.yaml"
[ ! -e /etc/nginx-medic/medic.yaml.dpkg-dist ] || die "the reinstall left medic.yaml.dpkg-dist"
say "ok: the edited conffile survived a reinstall"

# --- purge: nothing left ---------------------------------------------------------------------

dpkg -P "$PKG" >"$WORK/purge.log" 2>&1 || { cat "$WORK/purge.log" >&2; die "the purge failed"; }
left=()
while read -r kind path; do
    if [ "$kind" = d ]; then
        grep -qxF "$path" "$WORK/dirs-before" || [ ! -e "$path" ] || left+=("$path/")
    elif [ -e "$path" ] || [ -L "$path" ]; then
        left+=("$path")
    fi
done <"$WORK/contents"
for path in "${SCRIPT_PATHS[@]}"; do
    if [ -e "$path" ] || [ -L "$path" ]; then left+=("$path"); fi
done
[ ${#left[@]} -eq 0 ] || die "left after the purge: ${left[*]}"
say "ok: purged, nothing left ($(wc -l <"$WORK/contents") package paths and the scripts' own checked)"
say "passed"
