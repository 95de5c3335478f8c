#!/usr/bin/env bash
# panicbutton: turn a fresh SD card into a room unit at first boot, with no keyboard.
#
# On the card's boot partition (/boot/firmware on bookworm), in a folder "panicbutton":
#   firstboot.sh       this script
#   unit_fetch.py      talks to the server (standard library only)
#   enrol.txt          two lines:  server=https://alarm.example.org
#                                  code=ABCD-EFGH-JKLM-NPQR     (from the console's units page)
#   ca.crt             the site's CA certificate, if the server's is not publicly trusted
# and at the end of the single line of cmdline.txt, as Raspberry Pi Imager's first run does:
#   systemd.run=/boot/firmware/panicbutton/firstboot.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target
#
# First boot (no network yet): it copies the folder to /var/lib/panicbutton-enrol (root
# only), wipes the code from the boot partition (anyone can read a card's FAT partition),
# takes its entry out of cmdline.txt, and leaves a one-shot service that runs at the next
# boot, once the network is up: trade the code for the unit's bundle, fetch the
# wheelhouse, run provision.sh (which checks the unit and reports to the server, where
# the result shows on the units page). A failed install is tried again at each boot.
#
#   firstboot.sh            stage (as systemd.run at first boot)
#   firstboot.sh --enrol    enrol and install now (what the one-shot service runs)
set -euo pipefail

boot=${PANICBUTTON_BOOT:-/boot/firmware}
work=${PANICBUTTON_ENROL_DIR:-/var/lib/panicbutton-enrol}
say() { echo "panicbutton-firstboot: $*"; }

unhook() {
  # First of all: a boot that stays in kernel-command-line.target is a dead unit.
  if [ -f "$boot/cmdline.txt" ]; then
    sed -i 's| systemd.run=[^ ]*panicbutton/firstboot.sh[^ ]*||; s| systemd.run_success_action=[^ ]*||; s| systemd.unit=kernel-command-line.target||' \
      "$boot/cmdline.txt"
  fi
}

stage() {
  local src
  unhook
  src=$(cd "$(dirname "$0")" && pwd)
  install -d -m 0700 "$work"
  for f in firstboot.sh unit_fetch.py enrol.txt ca.crt; do
    if [ -f "$src/$f" ]; then install -m 0700 "$src/$f" "$work/$f"; fi
  done
  [ -f "$work/enrol.txt" ] || { say "no enrol.txt beside $0: nothing to do"; exit 1; }
  # The code is a secret until used: no copy of it stays on the readable partition.
  if [ -f "$src/enrol.txt" ]; then
    shred -u "$src/enrol.txt" 2>/dev/null || rm -f "$src/enrol.txt"
  fi
  cat > /etc/systemd/system/panicbutton-enrol.service <<UNIT
[Unit]
Description=panicbutton: enrol and install this room unit (first boot)
Wants=network-online.target
After=network-online.target time-sync.target
ConditionPathExists=$work/enrol.txt

[Service]
Type=oneshot
ExecStart=$work/firstboot.sh --enrol
TimeoutStartSec=0
# A failed install (the check, the network) is tried again every 5 minutes.
Restart=on-failure
RestartSec=5min

[Install]
WantedBy=multi-user.target
UNIT
  systemctl enable panicbutton-enrol.service 2>/dev/null \
    || ln -sf /etc/systemd/system/panicbutton-enrol.service \
      /etc/systemd/system/multi-user.target.wants/panicbutton-enrol.service
  say "staged: the unit enrols at the next boot, once the network is up"
}

value() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$work/enrol.txt" | tr -d '\r' | head -n1; }

enrol() {
  local server code ca=() bundle="$work/bundle" house="$work/wheelhouse" tries=0 status
  server=$(value server)
  code=$(value code)
  [ -n "$server" ] && [ -n "$code" ] || { say "$work/enrol.txt needs server= and code= lines"; exit 1; }
  if [ -f "$work/ca.crt" ]; then ca=(--ca "$work/ca.crt"); fi
  if [ ! -f "$bundle/device.toml" ]; then
    # The network may take a while after boot (Wi-Fi, DHCP): try for 30 minutes.
    until python3 "$work/unit_fetch.py" enrol --server "$server" --code "$code" "${ca[@]}" --out "$bundle"; do
      status=$?
      if [ "$status" = 3 ]; then
        # The server refused the code (unknown, used or expired): retrying cannot help.
        say "the server refused the enrolment code: make a new one on the console and write it to $work/enrol.txt"
        exit 3
      fi
      tries=$((tries + 1))
      [ "$tries" -lt 180 ] || { say "could not enrol; it is tried again at the next boot"; exit 1; }
      sleep 10
    done
  fi
  rm -rf "$house"
  python3 "$work/unit_fetch.py" wheelhouse --bundle "$bundle" --out "$house"
  bash "$house/provision.sh" "$bundle"
  say "installed; removing the enrolment files"
  systemctl disable panicbutton-enrol.service 2>/dev/null \
    || rm -f /etc/systemd/system/multi-user.target.wants/panicbutton-enrol.service
  rm -rf "$work"
}

case "${1:-}" in
  --enrol) enrol ;;
  "") stage ;;
  *) say "usage: $0 [--enrol]"; exit 2 ;;
esac
