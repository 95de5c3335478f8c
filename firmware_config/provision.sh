#!/usr/bin/env bash
# panicbutton: install a room unit on Raspberry Pi OS Lite or Debian (bookworm, arm64 or
# armhf), in one step, with no internet: everything comes from the bundle or the server.
#
#   sudo ./provision.sh BUNDLE_DIR
#
# BUNDLE_DIR comes from `panicbutton provision DEVICE_ID ...` on the server (device.toml,
# mqtt-password, device-token, ca.crt, and this script), or from an enrolment code
# (firstboot.sh). The agent's wheels come from, in this order: $WHEELHOUSE, BUNDLE_DIR/
# wheelhouse, the folder this script is in (a wheelhouse the server sent), or the
# server itself (the bundle's [server] url and token). pip installs them with
# --no-index and checks each one's SHA-256 (--require-hashes).
#
# It installs the agent into /opt/panicbutton/venvs/<version> (/opt/panicbutton/current
# points at it), puts the config and secrets in /etc/panicbutton (readable by the service
# user only), checks the wiring and the broker login, reports the result to the server,
# then enables the systemd service (which restarts it forever, with a watchdog).
#
# For tests and dry runs: ROOT=/some/dir installs the files under that folder, and
# PANICBUTTON_PROVISION_DRY=1 skips apt, users, pip and systemctl. For an emulated unit
# with no pins: PANICBUTTON_SIMULATE=1 checks with gpiozero's mock pins.
set -euo pipefail

die() { echo "provision: $*" >&2; exit 1; }

bundle=${1:-}
[ -n "$bundle" ] || die "usage: sudo $0 BUNDLE_DIR|device.toml (from 'panicbutton provision' or the console)"
here=$(cd "$(dirname "$0")" && pwd)
config="$bundle/device.toml"
if [ -f "$bundle" ]; then
  # One file from the console's units page: its secrets are in it, and a CA
  # certificate, if the broker uses TLS, is put in /etc/panicbutton/ca.crt by hand.
  config=$bundle
  bundle=$(mktemp -d)
  cp "$config" "$bundle/device.toml"
else
  [ -f "$config" ] || die "$config is missing: is this a bundle folder?"
  grep -q '^password *=' "$config" || [ -f "$bundle/mqtt-password" ] \
    || die "$bundle/mqtt-password is missing"
fi

root=${ROOT:-}
dry=${PANICBUTTON_PROVISION_DRY:-0}
etc="$root/etc/panicbutton"
opt="$root/opt/panicbutton"
run() { if [ "$dry" = 1 ]; then echo "would run: $*"; else "$@"; fi; }

if [ "$dry" != 1 ]; then
  [ "$(id -u)" = 0 ] || die "run as root (sudo): it creates a user, /etc/panicbutton and a service"
  command -v python3 >/dev/null || die "python3 is missing: use Raspberry Pi OS Lite or Debian bookworm"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 is $(python3 -V 2>&1); the agent needs 3.11 or newer (bookworm)"
fi

echo "1/7 OS packages"
if python3 -c 'import venv, ensurepip' 2>/dev/null; then
  echo "    python3-venv is there"
else
  # Only when the image lacks it; this is the one step that needs the OS's archive.
  run apt-get update -q
  run apt-get install -y -q python3-venv
fi
os_lgpio=0
if python3 -c 'import lgpio' 2>/dev/null; then
  os_lgpio=1
  echo "    the OS's lgpio is there (pins)"
elif apt-cache policy python3-lgpio 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  # Raspberry Pi OS's archive has it; with no route to the archive, the wheelhouse's is used.
  if run apt-get install -y -q python3-lgpio; then os_lgpio=1; fi
fi

echo "2/7 the agent's wheels"
house=${WHEELHOUSE:-}
if [ -z "$house" ] && [ -f "$bundle/wheelhouse/requirements.txt" ]; then house="$bundle/wheelhouse"; fi
if [ -z "$house" ] && [ -f "$here/requirements.txt" ]; then house="$here"; fi
if [ -z "$house" ]; then
  house=$(mktemp -d)
  fetch="$here/unit_fetch.py"
  [ -f "$fetch" ] || die "no wheelhouse and no unit_fetch.py beside this script: use the bundle from 'panicbutton provision'"
  python3 "$fetch" wheelhouse --bundle "$bundle" --out "$house" \
    || die "cannot fetch the wheels from the server (see above); or copy a wheelhouse into the bundle (panicbutton provision --wheelhouse)"
fi
[ -f "$house/requirements.txt" ] || die "$house is not a wheelhouse (no requirements.txt)"
version=$(tr -d '[:space:]' < "$house/VERSION")
# It names a folder replaced as root: nothing but a version will do.
[[ "$version" =~ ^[0-9][0-9A-Za-z.+!_-]{0,63}$ ]] || die "$house/VERSION is not a version: '$version'"
echo "    agent $version from $house"

echo "3/7 user 'panicbutton' in group gpio"
# Plain Debian has no gpio group and no rule giving it the pins; Raspberry Pi OS has both.
if ! getent group gpio >/dev/null; then run groupadd --system gpio; fi
if ! grep -qs 'gpiochip' /etc/udev/rules.d/*.rules /lib/udev/rules.d/*.rules \
    /usr/lib/udev/rules.d/*.rules "$root/etc/udev/rules.d/"*.rules; then
  install -d -m 0755 "$root/etc/udev/rules.d"
  install -m 0644 "$house/99-gpio.rules" "$root/etc/udev/rules.d/99-panicbutton-gpio.rules"
  if [ -d /run/udev ] && [ "$dry" != 1 ]; then
    udevadm control --reload || true
    udevadm trigger --subsystem-match=gpio || true
    udevadm settle || true
  fi
fi
if ! id panicbutton >/dev/null 2>&1; then
  run useradd --system --home-dir /var/lib/panicbutton --shell /usr/sbin/nologin \
    --groups gpio panicbutton
fi

echo "4/7 agent into $opt/venvs/$version"
venv="$opt/venvs/$version"
pip="$venv/bin/python -m pip install --quiet --no-index --find-links $house --require-hashes"
if [ "$dry" != 1 ]; then install -d -m 0755 "$opt/venvs"; fi
if [ ! -x "$venv/bin/panicbutton" ]; then
  # --system-site-packages: the venv sees the OS's lgpio where it has one.
  run rm -rf "$venv"
  run python3 -m venv --system-site-packages "$venv"
  if ! run $pip -r "$house/requirements.txt" \
    || { [ "$os_lgpio" = 0 ] && ! run $pip -r "$house/lgpio.txt"; }; then
    rm -rf "$venv"
    die "pip could not install the agent from $house (see above)"
  fi
fi

# What was installed before, put back if this run's check fails (a unit installed again
# must not be left stopped by a broker that was briefly out of reach).
old_current=$(readlink "$opt/current" 2>/dev/null || true)
backup=""
if [ -d "$etc" ] && [ "$dry" != 1 ]; then
  backup=$(mktemp -d)
  cp -a "$etc/." "$backup/"
fi
was_running=0
if [ -d /run/systemd/system ] && systemctl is-active -q panicbutton-device 2>/dev/null; then
  was_running=1
fi
relink() {  # relink NAME TARGET: one rename, never a moment without the link
  ln -sfn "$2" "$opt/.$1.new" && mv -T "$opt/.$1.new" "$opt/$1"
}
restore() {
  echo "provision: putting back what was installed before" >&2
  if [ -n "$backup" ]; then rm -rf "${etc:?}"/* && cp -a "$backup/." "$etc/"; fi
  if [ -n "$old_current" ]; then relink current "$old_current"; fi
  if [ "$was_running" = 1 ]; then systemctl start panicbutton-device || true; fi
}
if [ "$dry" != 1 ]; then
  relink current "venvs/$version"
  if [ -n "$old_current" ] && [ "$old_current" != "venvs/$version" ]; then
    relink previous "$old_current"
  fi
fi

echo "5/7 config and secrets into $etc"
install -d -m 0750 "$etc"
install -m 0640 "$bundle/device.toml" "$etc/device.toml"
for secret in mqtt-password device-token; do
  if [ -f "$bundle/$secret" ]; then install -m 0640 "$bundle/$secret" "$etc/$secret"; fi
done
if [ -f "$bundle/ca.crt" ]; then install -m 0644 "$bundle/ca.crt" "$etc/ca.crt"; fi
if [ "$dry" != 1 ]; then chgrp -R panicbutton "$etc"; fi
install -d -m 0755 "$root/etc/systemd/system"
install -m 0644 "$house/panicbutton-device.service" "$root/etc/systemd/system/panicbutton-device.service"

echo "6/7 check (wiring, broker login, HTTPS path)"
systemd=0
if [ -d /run/systemd/system ]; then systemd=1; fi
if [ "$systemd" = 1 ]; then run systemctl stop panicbutton-device 2>/dev/null || true; fi
# As the service user, from its state folder: a check run as root would leave a
# root-owned outbox that the service could not write.
install -d -m 0700 "$root/var/lib/panicbutton"
if [ "$dry" != 1 ]; then chown panicbutton:panicbutton "$root/var/lib/panicbutton"; fi
simulate=()
if [ "${PANICBUTTON_SIMULATE:-0}" = 1 ]; then simulate=(--simulate); fi
log=$(mktemp)
status=0
run runuser -u panicbutton -- env --chdir="$root/var/lib/panicbutton" \
  "$opt/current/bin/panicbutton" device check --no-test-alert "${simulate[@]}" \
  --config "$etc/device.toml" 2>&1 | tee "$log" || status=$?
passed=--passed
if [ "$status" != 0 ]; then passed=--failed; fi
if [ "$dry" != 1 ] && [ -f "$here/unit_fetch.py" ] && grep -q '^\[server\]' "$bundle/device.toml"; then
  python3 "$here/unit_fetch.py" report --bundle "$bundle" --action install \
    --version "$version" "$passed" --lines "$log" || true
fi
if [ "$status" != 0 ]; then
  if [ "$dry" != 1 ]; then restore; fi
  die "the check failed (see above); fix it and run this script again"
fi
if [ -n "$backup" ]; then rm -rf "$backup"; fi

echo "7/7 the service"
if [ "$systemd" = 1 ]; then
  run systemctl daemon-reload
  run systemctl enable --now panicbutton-device
  echo "done: the light should now blink briefly every 5 s (armed)."
else
  # An emulated unit or a container: enabled for the next boot, started by whoever runs it.
  run systemctl enable panicbutton-device 2>/dev/null || true
  echo "done: installed and checked; systemd is not running here, so the service was not started."
fi
echo "a full test through the server (pages the test recipients):"
echo "  sudo systemctl stop panicbutton-device"
echo "  sudo runuser -u panicbutton -- $opt/current/bin/panicbutton device check --config $etc/device.toml"
echo "  sudo systemctl start panicbutton-device"
