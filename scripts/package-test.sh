#!/usr/bin/env bash
# Builds the amd64 .deb (release, once) and tests it on this machine with dpkg:
#   lintian: no errors or warnings (overrides justified in packaging/README.md);
#   coexist: installed on a mosquitto that already has a 1883 listener with anonymous access,
#            the package leaves it alone: it restarts and serves its anonymous clients, and the
#            gateway reaches it; then purged;
#   install: files and modes, system user in dialout, conffiles, the unit (systemd-analyze),
#            the broker settings linked, the gateway's generated login, man pages, completions,
#            every link between the installed documents; the service as systemd runs it (its
#            user, NOTIFY_SOCKET, the installed config) against the installed mosquitto reaches
#            the state README.md quotes for a fresh install; on-site users read its birth,
#            anonymous clients are refused; `sudo fieldrelay run` on the service's files is
#            refused and `sudo fieldrelay queue stats` changes no owner; the broker user tool;
#            the console user tool keeps its password file root:fieldrelay 0640;
#   upgrade: to a second revision and the same one again: local config edits, queue, broker
#            and console users and the gateway's login kept;
#   remove:  binary gone, config, queue, broker and console users kept;
#   purge:   config, queue, broker users, login, link and stat override gone.
# Needs root. There is no systemd here (CI containers): mosquitto and the gateway run by hand as
# their units would, in a private network namespace (port 1883 there is not this machine's).
# Where systemd runs, installing starts the service and restarts mosquitto: use a VM or
# container. Idempotent: purges a fieldrelay package left installed before it starts, and leaves
# the machine as it found it (package purged, mosquitto's conf.d and state restored, the system
# user deleted if it created it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
export DEBIAN_FRONTEND=noninteractive

CARGO_DEB_VERSION=3.8.0
CONFIG=/etc/fieldrelay/config.yaml
STATE=/var/lib/fieldrelay
UNIT=/usr/lib/systemd/system/fieldrelay.service
BROKER_PASSWD=/etc/mosquitto/fieldrelay.passwd
BROKER_ACL=/etc/mosquitto/fieldrelay.acl
BROKER_LINK=/etc/mosquitto/conf.d/fieldrelay.conf
GATEWAY_PASSWORD=/etc/fieldrelay/local-password
DOCS=/usr/share/doc/fieldrelay
NETNS=fieldrelay-package-test
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
  [ ! -e "$1" ] && [ ! -L "$1" ] || fail "$1 still exists"
  ok "$1 gone"
}
installed_version() {
  dpkg-query -W -f='${Status} ${Version}' fieldrelay 2>/dev/null || true
}
# Waits up to $1 tenths of a second for the command after it to succeed.
await() {
  local tenths=$1
  shift
  for _ in $(seq "$tenths"); do
    "$@" 2>/dev/null && return 0
    sleep 0.1
  done
  "$@"
}
in_netns() { ip netns exec "$NETNS" "$@"; }

work=$(mktemp -d)
chmod 0755 "$work"
pids=()
user_existed=false
getent passwd fieldrelay >/dev/null && user_existed=true
# mosquitto's own files this test touches: conf.d (foreign snippets are set aside), the
# persistence file and the log.
mkdir -p "$work/saved/conf.d"
for file in /etc/mosquitto/conf.d/*.conf; do
  [ -e "$file" ] && [ "$file" != "$BROKER_LINK" ] && mv "$file" "$work/saved/conf.d/"
done
for file in /var/lib/mosquitto/mosquitto.db /var/log/mosquitto/mosquitto.log; do
  [ -e "$file" ] && cp -p "$file" "$work/saved/"
done
run_dir_existed=false
[ -d /run/mosquitto ] && run_dir_existed=true
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$NETNS" 2>/dev/null || true
  if dpkg-query -W fieldrelay >/dev/null 2>&1; then dpkg -P fieldrelay >/dev/null || true; fi
  if ! $user_existed && getent passwd fieldrelay >/dev/null; then
    deluser --system --quiet fieldrelay >/dev/null 2>&1 || userdel fieldrelay || true
    getent group fieldrelay >/dev/null && { groupdel fieldrelay 2>/dev/null || true; }
  fi
  rm -f /etc/mosquitto/conf.d/package-test-site.conf
  for file in "$work"/saved/conf.d/*.conf; do
    [ -e "$file" ] && mv "$file" /etc/mosquitto/conf.d/
  done
  rm -f /var/lib/mosquitto/mosquitto.db /var/log/mosquitto/mosquitto.log
  [ -e "$work/saved/mosquitto.db" ] && cp -p "$work/saved/mosquitto.db" /var/lib/mosquitto/
  [ -e "$work/saved/mosquitto.log" ] && cp -p "$work/saved/mosquitto.log" /var/log/mosquitto/
  $run_dir_existed || rmdir /run/mosquitto 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# mosquitto as its unit starts it (Debian's mosquitto.service: the run and log directories,
# then `mosquitto -c /etc/mosquitto/mosquitto.conf`), in the test's network namespace. Returns
# when it listens on 1883, fails with its log if it exits.
broker_pid=""
start_broker() {
  install -d -o mosquitto -m 0740 /run/mosquitto /var/log/mosquitto
  : >"$work/mosquitto.out"
  # Not through in_netns: `ip netns exec` execs mosquitto, so $! is mosquitto itself.
  ip netns exec "$NETNS" mosquitto -c /etc/mosquitto/mosquitto.conf >"$work/mosquitto.out" 2>&1 &
  broker_pid=$!
  pids+=("$broker_pid")
  for _ in $(seq 100); do
    kill -0 "$broker_pid" 2>/dev/null || {
      cat "$work/mosquitto.out" /var/log/mosquitto/mosquitto.log 2>/dev/null | tail -n 20 >&2
      fail "mosquitto did not start on /etc/mosquitto/mosquitto.conf"
    }
    in_netns bash -c 'exec 3<>/dev/tcp/127.0.0.1/1883' 2>/dev/null && return 0
    sleep 0.1
  done
  fail "mosquitto does not listen on 1883"
}
stop_broker() {
  kill -TERM "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  # Its port is free again before the next start.
  await 100 bash -c "! ip netns exec $NETNS bash -c 'exec 3<>/dev/tcp/127.0.0.1/1883' 2>/dev/null" ||
    fail "mosquitto still listens after SIGTERM"
}

# The service as systemd runs it: its user and group, UMask=, NOTIFY_SOCKET and a watchdog
# period (STATUS= every second instead of every 10 s), the installed config; in the namespace.
gateway_pid=""
start_gateway() {
  rm -f "$work/notify.sock" "$work/notify.log"
  socat -u "UNIX-RECV:$work/notify.sock" "OPEN:$work/notify.log,creat,append" &
  pids+=($!)
  await 100 test -S "$work/notify.sock"
  chmod 0666 "$work/notify.sock"
  (
    umask 0027
    exec ip netns exec "$NETNS" setpriv --reuid=fieldrelay --regid=fieldrelay --init-groups -- \
      env NOTIFY_SOCKET="$work/notify.sock" WATCHDOG_USEC=4000000 \
      fieldrelay run --config "$CONFIG"
  ) 2>"$work/run.log" &
  gateway_pid=$!
  pids+=("$gateway_pid")
  await 600 grep -q '^READY=1$' "$work/notify.log" || { cat "$work/run.log"; fail "no READY=1 within 60 s"; }
}
stop_gateway() {
  kill -TERM "$gateway_pid"
  wait "$gateway_pid" || { cat "$work/run.log"; fail "fieldrelay run did not exit 0 on SIGTERM"; }
  grep -q '^STOPPING=1$' "$work/notify.log" || fail "no STOPPING=1"
}
# Waits until STATUS= says exactly $1.
expect_status() {
  await 600 grep -qxF "STATUS=$1" "$work/notify.log" || {
    tail -n 5 "$work/notify.log"
    tail -n 20 "$work/run.log"
    fail "the service never reported: $1"
  }
  ok "systemctl status would say: Status: \"$1\""
}

echo "== package-test: prerequisites"
scripts/test-deps.sh # mosquitto (Depends:), mosquitto-clients, socat (the fake notify socket)
need=()
command -v adduser >/dev/null || need+=(adduser) # Depends:, absent from minimal images
command -v lintian >/dev/null || need+=(lintian)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
if dpkg-query -W fieldrelay >/dev/null 2>&1; then
  echo "purging a fieldrelay package left installed"
  dpkg -P fieldrelay
fi
ip netns del "$NETNS" 2>/dev/null || true
ip netns add "$NETNS"
in_netns ip link set lo up

echo "== package-test: build (release, once)"
# Man pages and completions from the command line's definition (a debug build: the test
# suite's, already there in CI).
cargo run --locked --quiet --example package_assets -- target/assets
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

echo "== package-test: lintian"
lintian --fail-on error,warning "$deb" 2>&1 | grep -v '^running with root privileges' || true
lintian --fail-on error,warning "$deb" >/dev/null 2>&1 || fail "lintian reports errors or warnings (above)"
ok "lintian: no errors or warnings"

echo "== package-test: coexist with a mosquitto that has its own anonymous 1883 listener"
printf 'listener 1883\nallow_anonymous true\n' >/etc/mosquitto/conf.d/package-test-site.conf
# An anonymous client of that broker: a retained value it publishes is read back by another.
served() {
  in_netns mosquitto_pub -h 127.0.0.1 -r -q 1 -t site/probe -m "$1" &&
    [ "$(in_netns mosquitto_sub -h 127.0.0.1 -t site/probe -C 1 -W 10)" = "$1" ]
}
start_broker
served before || fail "the site's broker does not serve anonymous clients before the install"
dpkg -i "$deb" 2>&1 | tee "$work/install.out"
grep -q "package-test-site.conf:1: listener 1883" "$work/install.out" ||
  fail "the postinst did not name the existing listener"
grep -q "stay off" "$work/install.out" || fail "the postinst did not say the settings stay off"
[ ! -e "$BROKER_LINK" ] && [ ! -L "$BROKER_LINK" ] || fail "the settings were linked over an existing listener"
ok "postinst left the existing broker configuration alone and said why"
served during || fail "the site's broker stopped serving anonymous clients during the install"
# The next restart (a reboot) with the package installed: the broker comes up and serves.
stop_broker
start_broker
served after || fail "the site's broker does not serve anonymous clients after a restart"
ok "the existing broker keeps running, restarts and serves anonymous clients with the package installed"
# It takes the gateway's login too (no password file): the shipped config works there as well.
start_gateway
expect_status "uplink connected; 0 rows queued; 0/2 devices online"
stop_gateway
stop_broker
dpkg -P fieldrelay >/dev/null
rm -f /etc/mosquitto/conf.d/package-test-site.conf
ok "purged after the coexistence check"

echo "== package-test: install"
dpkg -i "$deb" 2>&1 | tee "$work/install.out"
case "$(installed_version)" in
  "install ok installed 0.1.0-1") ok "installed $(installed_version)" ;;
  *) fail "dpkg status: $(installed_version)" ;;
esac
grep -q "on-site broker settings are on" "$work/install.out" || fail "postinst did not turn the broker settings on"
expect_file /usr/bin/fieldrelay root:root 755
expect_file /usr/sbin/fieldrelay-broker-user root:root 755
expect_file /usr/sbin/fieldrelay-broker-setup root:root 755
expect_file "$CONFIG" root:fieldrelay 640
expect_file "$GATEWAY_PASSWORD" root:fieldrelay 640
expect_file /etc/mosquitto/fieldrelay.conf root:root 644
expect_file /etc/mosquitto/fieldrelay.rights root:root 644
expect_file "$BROKER_PASSWD" root:mosquitto 640
expect_file "$BROKER_ACL" root:mosquitto 640
expect_file "$CONSOLE_PASSWD" root:fieldrelay 640
expect_file "$UNIT" root:root 644
expect_file "$STATE" fieldrelay:fieldrelay 750
[ "$(readlink "$BROKER_LINK")" = ../fieldrelay.conf ] || fail "$BROKER_LINK does not link to ../fieldrelay.conf"
ok "broker settings linked: $BROKER_LINK -> ../fieldrelay.conf"
[ "$(fieldrelay-broker-user list)" = fieldrelay ] || fail "broker users: $(fieldrelay-broker-user list)"
grep -qx 'user fieldrelay' "$BROKER_ACL" || fail "the ACL has no section for the gateway"
ok "the gateway's generated login is the broker's only user"
[ "$(fieldrelay --version)" = "fieldrelay 0.1.0" ] || fail "fieldrelay --version: $(fieldrelay --version)"
ok "fieldrelay --version"
for page in fieldrelay.1 fieldrelay-run.1 fieldrelay-check.1 fieldrelay-points-import.1 \
  fieldrelay-console-user.1 fieldrelay-console-user-add.1; do
  [ -f "/usr/share/man/man1/$page.gz" ] || fail "man page $page missing"
done
for page in fieldrelay-broker-user.8 fieldrelay-broker-setup.8; do
  [ -f "/usr/share/man/man8/$page.gz" ] || fail "man page $page missing"
done
zcat /usr/share/man/man1/fieldrelay-check.1.gz | grep -q '/etc/fieldrelay/config.yaml' || fail "fieldrelay-check(1) lacks the default config"
zcat /usr/share/man/man1/fieldrelay-console-user-add.1.gz | grep -q '/etc/fieldrelay/console.passwd' ||
  fail "fieldrelay-console-user-add(1) lacks the default password file"
ok "man pages in sections 1 and 8"
for file in /usr/share/bash-completion/completions/fieldrelay /usr/share/zsh/vendor-completions/_fieldrelay \
  /usr/share/fish/vendor_completions.d/fieldrelay.fish; do
  grep -q 'console-user' "$file" || fail "completion $file missing or without console-user"
done
ok "bash, zsh and fish completions"

# Every relative link in the installed documents leads to an installed file.
broken=""
while IFS= read -r doc; do
  while IFS= read -r target; do
    case "$target" in http:* | https:* | mailto:* | "#"* | "") continue ;; esac
    [ -e "$(dirname "$doc")/${target%%#*}" ] || broken="$broken $doc -> $target"
  done < <(grep -o '](\([^)]*\))' "$doc" | sed 's/^](\(.*\))$/\1/')
done < <(find "$DOCS" -name '*.md')
[ -z "$broken" ] || fail "links to files not installed:$broken"
ok "every link between the installed documents resolves"

IFS=: read -r _ _ uid _ _ home shell < <(getent passwd fieldrelay)
[ "$uid" -lt 1000 ] || fail "fieldrelay uid $uid is not a system uid"
[ "$home" = "$STATE" ] || fail "fieldrelay home is $home"
case "$shell" in */nologin | */false) ;; *) fail "fieldrelay has a login shell: $shell" ;; esac
id -nG fieldrelay | tr ' ' '\n' | grep -qx dialout || fail "fieldrelay is not in group dialout"
ok "system user fieldrelay (uid $uid, no login, in dialout)"

conffiles=$(dpkg-query -W -f='${Conffiles}\n' fieldrelay | awk '{print $1}' | sort | tr '\n' ' ')
[ "$conffiles" = "/etc/fieldrelay/config.yaml /etc/mosquitto/fieldrelay.conf /etc/mosquitto/fieldrelay.rights " ] ||
  fail "conffiles: $conffiles"
ok "conffiles: $conffiles"
[ "$(dpkg-statoverride --list "$CONFIG")" = "root fieldrelay 640 $CONFIG" ] || fail "no stat override for $CONFIG"
ok "stat override root:fieldrelay 0640 on $CONFIG"

for key in Type=notify WatchdogSec= User=fieldrelay SupplementaryGroups=dialout \
  "ExecStartPre=-/usr/bin/fieldrelay check --config $CONFIG" RestartPreventExitStatus=78 \
  "ExecReload=/usr/bin/fieldrelay check --config $CONFIG" "ExecReload=/bin/kill -HUP \$MAINPID" \
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

runuser -u fieldrelay -- fieldrelay check
ok "fieldrelay check on the installed config (the default --config), as user fieldrelay"

# As root, check also asks whether the service user may read every file the config names: a
# password file left root:root 0600 is refused at its key; in group fieldrelay, 0640, it passes.
printf 'secret\n' >"$work/mqtt-password"
chmod 0600 "$work/mqtt-password"
sed "s|^\(  password_file:\).*|\1 $work/mqtt-password|" "$CONFIG" >"$work/files.yaml"
grep -qx "  password_file: $work/mqtt-password" "$work/files.yaml" ||
  fail "the installed config names no uplink.password_file to point elsewhere"
if fieldrelay check --config "$work/files.yaml" 2>"$work/check.log"; then
  fail "check passed a password file the service user cannot read"
fi
grep -q "uplink.password_file: $work/mqtt-password is not readable by the service user fieldrelay" "$work/check.log" \
  || { cat "$work/check.log"; fail "check did not name the unreadable password file"; }
chgrp fieldrelay "$work/mqtt-password"
chmod 0640 "$work/mqtt-password"
said=$(fieldrelay check --config "$work/files.yaml") || fail "check refused a password file the service user can read"
case "$said" in
  *"readable by the service user fieldrelay"*) ;;
  *) fail "check as root did not say the files are readable by the service user: $said" ;;
esac
ok "check as root: files the service user cannot read are refused, readable ones said so"

echo "== package-test: the fresh install runs as README.md says"
# README's first quoted status line is the one of a fresh install.
readme_status=$(grep -o 'Status: "[^"]*"' "$DOCS/README.md" | head -n 1 | sed 's/^Status: "\(.*\)"$/\1/')
[ -n "$readme_status" ] || fail "README.md quotes no Status line"
start_broker
start_gateway
expect_status "$readme_status"
# On-site clients: an HMI login reads the gateway's birth; anonymous clients are refused.
printf 'hmi-secret\nhmi-secret\n' | fieldrelay-broker-user add hmi
grep -q '^hmi:' "$BROKER_PASSWD" || fail "fieldrelay-broker-user add did not add hmi"
expect_file "$BROKER_PASSWD" root:mosquitto 640
kill -HUP "$broker_pid" # what the tool's `systemctl reload mosquitto` does under systemd
birth=$(await 50 in_netns mosquitto_sub -h 127.0.0.1 -u hmi -P hmi-secret -t fieldrelay/plant1-gw01/status -C 1 -W 10)
case "$birth" in *'"status":"online"'*) ;; *) fail "the HMI user did not read the birth: $birth" ;; esac
ok "an on-site user reads the gateway's status: $birth"
if in_netns mosquitto_pub -h 127.0.0.1 -q 1 -t fieldrelay/plant1-gw01/boiler/setpoint/set -m 1 2>"$work/anon.err"; then
  fail "an anonymous client was accepted by the on-site broker"
fi
grep -q "not authorised" "$work/anon.err" || fail "anonymous client: $(cat "$work/anon.err")"
ok "anonymous clients are refused"
! grep -q "Warning" /var/log/mosquitto/mosquitto.log "$work/mosquitto.out" 2>/dev/null ||
  fail "mosquitto warns: $(grep Warning /var/log/mosquitto/mosquitto.log "$work/mosquitto.out")"
ok "mosquitto starts without warnings"
stop_gateway
stop_broker
expect_file "$STATE/queue.db" fieldrelay:fieldrelay 640

echo "== package-test: sudo fieldrelay on the service's files"
owners_before=$(stat -c '%n %U:%G' "$STATE" "$STATE"/*)
set +e
fieldrelay run --config "$CONFIG" 2>"$work/root-run.log"
code=$?
set -e
cat "$work/root-run.log"
[ "$code" -eq 77 ] || fail "fieldrelay run as root exited $code, want 77"
for expected in "refusing to run as root on $STATE" "it belongs to fieldrelay" \
  "sudo -u fieldrelay fieldrelay run --config $CONFIG" "sudo systemctl start fieldrelay"; do
  grep -qF "$expected" "$work/root-run.log" || fail "the refusal does not say: $expected"
done
ok "sudo fieldrelay run is refused with the directory, its owner and what to run instead"
fieldrelay queue stats >/dev/null || fail "sudo fieldrelay queue stats (the default config) failed"
[ "$(stat -c '%n %U:%G' "$STATE" "$STATE"/*)" = "$owners_before" ] ||
  fail "root changed the state files: $(stat -c '%n %U:%G' "$STATE" "$STATE"/*)"
ok "sudo fieldrelay run and queue stats leave every state file the service's"

# Console users: the tool run as root keeps the password file the service's.
printf 'tech-secret\ntech-secret\n' | fieldrelay console-user add tech
grep -q '^tech:\$2b\$' "$CONSOLE_PASSWD" || fail "fieldrelay console-user add did not add tech"
expect_file "$CONSOLE_PASSWD" root:fieldrelay 640
ok "console user added, file still root:fieldrelay 0640"

echo "== package-test: upgrade (0.1.0-1 -> 0.1.0-2, then the same again)"
echo "# local change $$" >>"$CONFIG"
queue_sum=$(sha256sum "$STATE/queue.db")
password_sum=$(sha256sum "$GATEWAY_PASSWORD")
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
grep -qx 'user hmi' "$BROKER_ACL" || fail "upgrade lost the ACL section of hmi"
[ "$(sha256sum "$GATEWAY_PASSWORD")" = "$password_sum" ] || fail "upgrade changed the gateway's password"
grep -q '^tech:' "$CONSOLE_PASSWD" || fail "upgrade lost the console users"
ok "broker users, their rights, console users and the gateway's login kept"
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
for path in /etc/fieldrelay "$STATE" /etc/mosquitto/fieldrelay.conf /etc/mosquitto/fieldrelay.rights \
  "$BROKER_LINK" "$BROKER_PASSWD" "$BROKER_ACL" /etc/systemd/system/multi-user.target.wants/fieldrelay.service; do
  expect_gone "$path"
done
! dpkg-statoverride --list "$CONFIG" >/dev/null || fail "stat override left behind"
ok "stat override removed"
getent passwd fieldrelay >/dev/null || fail "purge deleted the system user (Debian keeps it)"
ok "system user kept after purge (removed by this script's cleanup)"

echo "package-test: $checks passed, 0 failed"
