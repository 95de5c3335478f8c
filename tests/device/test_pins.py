"""What to install for the pins, said for the system the unit runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.exc import BadPinFactory

from demo.broker import free_port
from device.check import check
from device.errors import ConfigError
from device.pins import PinFactory, install_hint, make_factory, on_raspberry_pi_os
from tests.device.bare import unit


def test_raspberry_pi_os_is_told_from_plain_debian(tmp_path: Path) -> None:
    issue = tmp_path / "rpi-issue"
    assert on_raspberry_pi_os({"ID": "raspbian"}, issue)  # the 32-bit edition
    assert not on_raspberry_pi_os({"ID": "debian"}, issue)
    assert not on_raspberry_pi_os({}, issue)  # no /etc/os-release
    issue.write_text("Raspberry Pi reference 2024-11-19\n")
    assert on_raspberry_pi_os({"ID": "debian"}, issue)  # the 64-bit edition
    assert not on_raspberry_pi_os({"ID": "ubuntu"}, issue)


def test_lgpio_comes_from_apt_on_raspberry_pi_os_and_from_pip_elsewhere() -> None:
    assert (
        install_hint(PinFactory.LGPIO, pi_os=True) == "install it: sudo apt install python3-lgpio"
    )
    assert install_hint(PinFactory.LGPIO, pi_os=False) == (
        f"pip install lgpio into the agent's venv: {sys.prefix}/bin/pip install lgpio "
        "(the server's wheelhouse has it: rerun provision.sh)"
    )


def test_a_named_factory_that_does_not_load_says_what_to_install() -> None:
    if importlib.util.find_spec("lgpio") is not None:
        pytest.skip("lgpio is installed here")
    with pytest.raises(ConfigError) as raised:
        make_factory(PinFactory.LGPIO)
    assert str(raised.value) == (
        "pins.factory = \"lgpio\" cannot be used here (No module named 'lgpio'); "
        f'{install_hint(PinFactory.LGPIO)}; or set pins.factory = "auto"'
    )


@pytest.mark.filterwarnings("ignore::gpiozero.exc.PinFactoryFallback")
def test_check_says_what_to_install_when_no_pin_library_loads(tmp_path: Path) -> None:
    try:
        Device.ensure_pin_factory()
    except BadPinFactory:
        pass
    else:
        pytest.skip("a pin library loads here")
    lines: list[str] = []
    check(unit(tmp_path, port=free_port()), say=lines.append, test_alert=False, pin_factory=None)
    assert (
        "FAIL  pins: no pin library loads here (Unable to load any default pin factory!): "
        f"lgpio works on every Raspberry Pi; {install_hint(PinFactory.LGPIO)}"
    ) in lines
    # The rest of the check still runs.
    assert any(line.startswith("FAIL  broker: ") for line in lines)
