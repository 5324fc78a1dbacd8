#!/usr/bin/env bash
# lab/box/boot.sh — the inside of a box's start (lab/box/README.md says how it works), shared by
# scripts/box and tests/support/system_box.rs. Run it as
#     B=DIR CG2=/sys/fs/cgroup[/unified] GROUP=NAME \
#         setsid unshare --mount --propagation private bash lab/box/boot.sh
# from a process that is not a process group leader: setsid and unshare then exec, bash execs
# systemd-nspawn, so the PID the caller started is systemd-nspawn itself. The box's PID 1 is its
# child. In the private mount namespace: a tmpfs for the overlay's upper layer, the machine's `/`
# as the read-only lower layer, a tmpfs over /run/systemd (nspawn keeps state there), the box's
# own cgroup2 group, and on a hybrid host the cgroup2 tree over /sys/fs/cgroup so the box never
# sees the v1 hierarchies. --private-network: only a loopback of its own.
set -euo pipefail
: "${B:?B (the box directory) is not set}" "${CG2:?CG2 (the cgroup2 mount) is not set}"
: "${GROUP:?GROUP (the cgroup2 group of the box) is not set}"
mount -t tmpfs -o size=4G tmpfs "$B/rw"
mkdir -p "$B/rw/upper" "$B/rw/work"
mount -t overlay overlay -o lowerdir=/,upperdir="$B/rw/upper",workdir="$B/rw/work" "$B/root"
mount -t tmpfs -o mode=0755 tmpfs /run/systemd
mkdir -p "$CG2/$GROUP"
echo $$ >"$CG2/$GROUP/cgroup.procs"
[ "$CG2" = /sys/fs/cgroup ] || mount --bind "$CG2" /sys/fs/cgroup
export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
exec systemd-nspawn --quiet --register=no --keep-unit --private-network -D "$B/root" \
    -b systemd.unit=multi-user.target
