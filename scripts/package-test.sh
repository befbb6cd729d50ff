#!/usr/bin/env bash
# Builds the amd64 .deb (release, once) and tests it on this machine with dpkg:
#   install: files and modes, system user in dialout, conffiles, the unit (systemd-analyze),
#            `fieldrelay check` on the installed config as the service user, a short run as that
#            user (READY=1 on a notify socket, queue created), the broker user tool;
#   upgrade: to a second revision and the same one again: local config edits, queue and
#            broker users kept;
#   remove:  binary gone, config, queue and broker users kept;
#   purge:   config, queue, broker users and stat override gone.
# Needs root. Without a running systemd (CI containers) the maintainer scripts skip systemctl;
# where systemd runs, installing starts the service and restarts mosquitto: use a VM or container.
# Idempotent: purges a fieldrelay package left installed before it starts, and leaves the
# machine as it found it (package purged, the system user deleted if it created it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
export DEBIAN_FRONTEND=noninteractive

CARGO_DEB_VERSION=3.8.0
CONFIG=/etc/fieldrelay/config.yaml
STATE=/var/lib/fieldrelay
UNIT=/usr/lib/systemd/system/fieldrelay.service
BROKER_PASSWD=/etc/mosquitto/fieldrelay.passwd
CONSOLE_PASSWD=/etc/fieldrelay/console.passwd

if [ "$(id -u)" -ne 0 ]; then
  echo "package-test: needs root (dpkg -i)" >&2
  exit 1
fi

checks=0
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
ok() {
  checks=$((checks + 1))
  echo "ok: $*"
}
expect_file() { # path owner:group mode
  [ -e "$1" ] || fail "$1 missing"
  local got
  got=$(stat -c '%U:%G %a' "$1")
  [ "$got" = "$2 $3" ] || fail "$1 is $got, want $2 $3"
  ok "$1 $2 $3"
}
expect_gone() {
  [ ! -e "$1" ] || fail "$1 still exists"
  ok "$1 gone"
}
installed_version() {
  dpkg-query -W -f='${Status} ${Version}' fieldrelay 2>/dev/null || true
}

work=$(mktemp -d)
pids=()
user_existed=false
getent passwd fieldrelay >/dev/null && user_existed=true
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if dpkg-query -W fieldrelay >/dev/null 2>&1; then dpkg -P fieldrelay >/dev/null || true; fi
  if ! $user_existed && getent passwd fieldrelay >/dev/null; then
    deluser --system --quiet fieldrelay >/dev/null 2>&1 || userdel fieldrelay || true
    getent group fieldrelay >/dev/null && { groupdel fieldrelay 2>/dev/null || true; }
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "== package-test: prerequisites"
scripts/test-deps.sh # mosquitto (Depends:), socat (the fake notify socket)
if ! command -v adduser >/dev/null; then # Depends:, absent from minimal images
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends adduser
fi
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
if dpkg-query -W fieldrelay >/dev/null 2>&1; then
  echo "purging a fieldrelay package left installed"
  dpkg -P fieldrelay
fi

echo "== package-test: build (release, once)"
# Separate output directories: cargo deb clears the one it writes to.
deb=$(cargo deb --locked --output "$work/rev1/" | tail -n 1)
# The upgrade target: the same build as revision 2, packaged without compiling again.
deb2=$(cargo deb --no-build --deb-revision 2 --output "$work/rev2/" | tail -n 1)
{ [ -f "$deb" ] && [ -f "$deb2" ]; } || fail "cargo deb did not print the package paths"
echo "$deb: $(du -k "$deb" | cut -f1) KiB; binary $(dpkg-deb --fsys-tarfile "$deb" | tar -tvf - ./usr/bin/fieldrelay | awk '{print $3}') bytes"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
# Depends: is written by hand (Cargo.toml): the binary must need nothing more than it names.
needed=$(readelf -d target/release/fieldrelay | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
[ "$needed" = "ld-linux-x86-64.so.2 libc.so.6 libgcc_s.so.1 libm.so.6 " ] ||
  fail "the binary links $needed: update depends in Cargo.toml and this check"
glibc=$(readelf -W --dyn-syms target/release/fieldrelay | grep -o 'GLIBC_[0-9.]*' | sort -V -u | tail -n 1)
[ "$glibc" = GLIBC_2.34 ] || fail "the binary needs $glibc: update libc6 (>= 2.34) in Cargo.toml"
ok "shared libraries and glibc floor match Depends: $(dpkg-deb -f "$deb" Depends)"
dpkg-deb --contents "$deb" | awk '{print $1, $2, $6}'

echo "== package-test: install"
dpkg -i "$deb"
case "$(installed_version)" in
  "install ok installed 0.1.0-1") ok "installed $(installed_version)" ;;
  *) fail "dpkg status: $(installed_version)" ;;
esac
expect_file /usr/bin/fieldrelay root:root 755
expect_file /usr/sbin/fieldrelay-broker-user root:root 755
expect_file "$CONFIG" root:fieldrelay 640
expect_file /etc/mosquitto/conf.d/fieldrelay.conf root:root 644
expect_file /etc/mosquitto/fieldrelay.acl root:root 644
expect_file "$BROKER_PASSWD" root:mosquitto 640
expect_file "$CONSOLE_PASSWD" root:fieldrelay 640
expect_file "$UNIT" root:root 644
expect_file "$STATE" fieldrelay:fieldrelay 750
[ "$(fieldrelay --version)" = "fieldrelay 0.1.0" ] || fail "fieldrelay --version: $(fieldrelay --version)"
ok "fieldrelay --version"

IFS=: read -r _ _ uid _ _ home shell < <(getent passwd fieldrelay)
[ "$uid" -lt 1000 ] || fail "fieldrelay uid $uid is not a system uid"
[ "$home" = "$STATE" ] || fail "fieldrelay home is $home"
case "$shell" in */nologin | */false) ;; *) fail "fieldrelay has a login shell: $shell" ;; esac
id -nG fieldrelay | tr ' ' '\n' | grep -qx dialout || fail "fieldrelay is not in group dialout"
ok "system user fieldrelay (uid $uid, no login, in dialout)"

conffiles=$(dpkg-query -W -f='${Conffiles}\n' fieldrelay | awk '{print $1}' | sort | tr '\n' ' ')
[ "$conffiles" = "/etc/fieldrelay/config.yaml /etc/mosquitto/conf.d/fieldrelay.conf /etc/mosquitto/fieldrelay.acl " ] ||
  fail "conffiles: $conffiles"
ok "conffiles: $conffiles"
[ "$(dpkg-statoverride --list "$CONFIG")" = "root fieldrelay 640 $CONFIG" ] || fail "no stat override for $CONFIG"
ok "stat override root:fieldrelay 0640 on $CONFIG"

for key in Type=notify WatchdogSec= User=fieldrelay SupplementaryGroups=dialout \
  "ExecStartPre=-/usr/bin/fieldrelay check --config $CONFIG" RestartPreventExitStatus=78 \
  "ExecReload=/usr/bin/fieldrelay check --config $CONFIG" 'ExecReload=/bin/kill -HUP $MAINPID' \
  Restart=on-failure ProtectSystem=strict StateDirectory=fieldrelay NoNewPrivileges=yes PrivateTmp=yes; do
  grep -qx "$key.*" "$UNIT" || fail "unit lacks $key"
done
ok "unit has Type=notify, watchdog, user, ExecStartPre check, ExecReload, restart policy, hardening"
[ -L /etc/systemd/system/multi-user.target.wants/fieldrelay.service ] || fail "unit not enabled"
ok "unit enabled (multi-user.target.wants)"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$UNIT"
  ok "systemd-analyze verify"
  if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    systemd-analyze security --offline=true --threshold=30 "$UNIT" | tail -n 1
    ok "systemd-analyze security: exposure within 3.0"
  fi
else
  echo "skip: systemd-analyze not installed"
fi

runuser -u fieldrelay -- fieldrelay check --config "$CONFIG"
ok "fieldrelay check on the installed config, as user fieldrelay"

# A short run as systemd would do it: the service user, NOTIFY_SOCKET, the installed config. In
# a private network namespace when possible, so the example config reaches no broker or device
# of this machine.
socat -u "UNIX-RECV:$work/notify.sock" "OPEN:$work/notify.log,creat,append" &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/notify.sock" ] && break; sleep 0.1; done
chmod 0755 "$work"
chmod 0666 "$work/notify.sock"
netns=()
unshare -n true 2>/dev/null && netns=(unshare -n)
# Every step execs (no fork), so $! is the gateway itself; umask as the unit's UMask=.
(
  umask 0027
  exec "${netns[@]}" setpriv --reuid=fieldrelay --regid=fieldrelay --init-groups -- \
    env NOTIFY_SOCKET="$work/notify.sock" fieldrelay run --config "$CONFIG"
) 2>"$work/run.log" &
gateway=$!
pids+=("$gateway")
for _ in $(seq 600); do grep -q '^READY=1$' "$work/notify.log" 2>/dev/null && break; sleep 0.1; done
grep -q '^READY=1$' "$work/notify.log" || { cat "$work/run.log"; fail "no READY=1 within 60 s"; }
ok "run as user fieldrelay: READY=1 on NOTIFY_SOCKET"
kill -TERM "$gateway"
wait "$gateway" || { cat "$work/run.log"; fail "fieldrelay run did not exit 0 on SIGTERM"; }
grep -q '^STOPPING=1$' "$work/notify.log" || fail "no STOPPING=1"
expect_file "$STATE/queue.db" fieldrelay:fieldrelay 640

printf 'hmi-secret\nhmi-secret\n' | fieldrelay-broker-user add hmi
grep -q '^hmi:' "$BROKER_PASSWD" || fail "fieldrelay-broker-user add did not add hmi"
expect_file "$BROKER_PASSWD" root:mosquitto 640
printf 'tech-secret\ntech-secret\n' | fieldrelay console-user add tech
grep -q '^tech:\$2b\$' "$CONSOLE_PASSWD" || fail "fieldrelay console-user add did not add tech"
expect_file "$CONSOLE_PASSWD" root:fieldrelay 640
ok "console user added, file still root:fieldrelay 0640"

echo "== package-test: upgrade (0.1.0-1 -> 0.1.0-2, then the same again)"
echo "# local change $$" >>"$CONFIG"
queue_sum=$(sha256sum "$STATE/queue.db")
dpkg -i "$deb2"
dpkg -i "$deb2"
case "$(installed_version)" in
  "install ok installed 0.1.0-2") ok "upgraded to $(installed_version), installed twice" ;;
  *) fail "dpkg status: $(installed_version)" ;;
esac
grep -qx "# local change $$" "$CONFIG" || fail "upgrade lost the local config change"
ok "local config change kept"
[ -z "$(find /etc/fieldrelay /etc/mosquitto -name '*.dpkg-*')" ] || fail "conffile prompts left .dpkg-* files"
expect_file "$CONFIG" root:fieldrelay 640
[ "$(sha256sum "$STATE/queue.db")" = "$queue_sum" ] || fail "upgrade changed the queue"
ok "queue kept"
grep -q '^hmi:' "$BROKER_PASSWD" || fail "upgrade lost the broker users"
grep -q '^tech:' "$CONSOLE_PASSWD" || fail "upgrade lost the console users"
ok "broker and console users kept"
runuser -u fieldrelay -- fieldrelay check --config "$CONFIG"
ok "fieldrelay check after the upgrade"

echo "== package-test: remove"
dpkg -r fieldrelay
case "$(installed_version)" in
  "deinstall ok config-files"*) ok "removed: $(installed_version)" ;;
  *) fail "dpkg status: $(installed_version)" ;;
esac
expect_gone /usr/bin/fieldrelay
expect_gone "$UNIT"
grep -qx "# local change $$" "$CONFIG" || fail "remove lost the config"
ok "config kept"
[ "$(sha256sum "$STATE/queue.db")" = "$queue_sum" ] || fail "remove changed the queue"
ok "queue kept"
grep -q '^hmi:' "$BROKER_PASSWD" || fail "remove lost the broker users"
grep -q '^tech:' "$CONSOLE_PASSWD" || fail "remove lost the console users"
ok "broker and console users kept"

echo "== package-test: purge"
dpkg -P fieldrelay
[ -z "$(installed_version)" ] || [ "$(installed_version)" = "unknown ok not-installed " ] ||
  fail "dpkg status after purge: $(installed_version)"
ok "purged"
for path in /etc/fieldrelay "$STATE" /etc/mosquitto/conf.d/fieldrelay.conf /etc/mosquitto/fieldrelay.acl \
  "$BROKER_PASSWD" /etc/systemd/system/multi-user.target.wants/fieldrelay.service; do
  expect_gone "$path"
done
! dpkg-statoverride --list "$CONFIG" >/dev/null || fail "stat override left behind"
ok "stat override removed"
getent passwd fieldrelay >/dev/null || fail "purge deleted the system user (Debian keeps it)"
ok "system user kept after purge (removed by this script's cleanup)"

echo "package-test: $checks passed, 0 failed"
