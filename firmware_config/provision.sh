#!/usr/bin/env bash
# panicbutton: provision a room unit on a fresh Raspberry Pi OS, in one step.
#
#   sudo firmware_config/provision.sh BUNDLE_DIR
#
# BUNDLE_DIR comes from `panicbutton provision DEVICE_ID ...` on the server side:
# device.toml, mqtt-password, and optionally device-token and ca.crt. Or give
# the one device.toml that the console's units page made (secrets inside). This
# script installs the agent into /opt/panicbutton/.venv (from this checkout),
# puts the config and secrets in /etc/panicbutton (readable by the service
# user only), checks the wiring and the broker login, then enables the
# systemd service (which restarts it forever, with a watchdog).
#
# For tests and dry runs: ROOT=/some/dir installs the files under that folder,
# and PANICBUTTON_PROVISION_DRY=1 skips apt, useradd, pip and systemctl.
set -euo pipefail

die() { echo "provision: $*" >&2; exit 1; }

bundle=${1:-}
[ -n "$bundle" ] || die "usage: sudo $0 BUNDLE_DIR|device.toml (from 'panicbutton provision' or the console)"
config="$bundle/device.toml"
if [ -f "$bundle" ]; then
  # One file from the console's units page: its secrets are in it, and a CA
  # certificate, if the broker uses TLS, is put in /etc/panicbutton/ca.crt by hand.
  config=$bundle
  bundle=$(mktemp -d)
else
  [ -f "$config" ] || die "$config is missing: is this a bundle folder?"
  [ -f "$bundle/mqtt-password" ] || die "$bundle/mqtt-password is missing"
fi

root=${ROOT:-}
dry=${PANICBUTTON_PROVISION_DRY:-0}
source_dir=$(cd "$(dirname "$0")/.." && pwd)
etc="$root/etc/panicbutton"
venv="$root/opt/panicbutton/.venv"
run() { if [ "$dry" = 1 ]; then echo "would run: $*"; else "$@"; fi; }

if [ "$dry" != 1 ]; then
  [ "$(id -u)" = 0 ] || die "run as root (sudo): it creates a user, /etc/panicbutton and a service"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 is $(python3 -V 2>&1); the agent needs 3.11 or newer (Raspberry Pi OS bookworm)"
fi

echo "1/5 packages (python3-venv; python3-lgpio, the pin driver that works on every Pi)"
run apt-get install -y -q python3-venv python3-lgpio

echo "2/5 user 'panicbutton' in group gpio"
if ! id panicbutton >/dev/null 2>&1; then
  run useradd --system --home-dir /var/lib/panicbutton --shell /usr/sbin/nologin \
    --groups gpio panicbutton
fi

echo "3/5 agent into $venv"
# --system-site-packages: the venv sees the system's lgpio.
run python3 -m venv --system-site-packages "$venv"
run "$venv/bin/pip" install --quiet "$source_dir[device]"

echo "4/5 config and secrets into $etc"
install -d -m 0750 "$etc"
install -m 0640 "$config" "$etc/device.toml"
for secret in mqtt-password device-token; do
  if [ -f "$bundle/$secret" ]; then install -m 0640 "$bundle/$secret" "$etc/$secret"; fi
done
if [ -f "$bundle/ca.crt" ]; then install -m 0644 "$bundle/ca.crt" "$etc/ca.crt"; fi
if [ "$dry" != 1 ]; then chgrp -R panicbutton "$etc"; fi
install -d -m 0755 "$root/etc/systemd/system"
install -m 0644 "$source_dir/firmware_config/panicbutton-device.service" \
  "$root/etc/systemd/system/panicbutton-device.service"

echo "5/5 check (wiring, broker login, HTTPS path), then start the service"
run systemctl stop panicbutton-device 2>/dev/null || true
# As the service user, from its state folder: a check run as root would leave a
# root-owned outbox that the service could not write.
install -d -m 0750 "$root/var/lib/panicbutton"
if [ "$dry" != 1 ]; then chown panicbutton:panicbutton "$root/var/lib/panicbutton"; fi
run runuser -u panicbutton -- env --chdir="$root/var/lib/panicbutton" \
  "$venv/bin/panicbutton" device check --no-test-alert \
  --config "$etc/device.toml" \
  || die "the check failed (see above); fix it and run this script again"
run systemctl daemon-reload
run systemctl enable --now panicbutton-device
echo "done: the light should now blink briefly every 5 s (armed)."
echo "a full test through the server (pages the test recipients):"
echo "  sudo systemctl stop panicbutton-device"
echo "  sudo runuser -u panicbutton -- $venv/bin/panicbutton device check --config $etc/device.toml"
echo "  sudo systemctl start panicbutton-device"
