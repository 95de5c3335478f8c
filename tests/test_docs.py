"""The documents agree with the code, so they cannot drift.

``docs/asyncapi.yaml`` must describe the topics, payloads and enums of
:mod:`panicbutton.wire` and the ACL of :mod:`server.units.broker`;
``docs/openapi.json`` must be what the app generates. After changing a route,
regenerate it with ``.venv/bin/python -m tests.test_docs``.

Every Markdown file of the repository (the site's pages in ``docs/``, the README,
CONTRIBUTING, ...) may name only files, ``make`` targets, ``panicbutton``
commands and options, settings, modules and HTTP routes that exist.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import io
import json
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML has no inline types; types-PyYAML is not installed

from device import indicator
from device.config import KNOWN, parse_config
from panicbutton import wire
from panicbutton.cli import parser as cli_parser
from panicbutton.log.spec import EVENT_TYPES
from panicbutton.log.verify import main as verify_main
from server.app import build
from server.settings import Settings
from server.units.broker import DEVICE_RULES, SERVER_RULES
from tests import harness

DOCS = Path(__file__).resolve().parent.parent / "docs"
ASYNCAPI = DOCS / "asyncapi.yaml"
OPENAPI = DOCS / "openapi.json"

MOMENT = datetime(2026, 11, 28, 12, 0, 0, 123000, tzinfo=UTC)
ALERT_ID = "3f2a9c0e8b7d4e6f9a1b2c3d4e5f6a7b"

#: What the code puts on the wire, per schema name.
SAMPLES: dict[str, list[bytes]] = {
    "Alert": [
        wire.Alert(device_id="unit-1", alert_id=ALERT_ID, seq=1, pressed_at=MOMENT).to_json(),
        wire.Alert(
            device_id="unit-9",
            alert_id=ALERT_ID,
            seq=12,
            pressed_at=MOMENT,
            kind=wire.AlertKind.TEST,
            presses=3,
        ).to_json(),
    ],
    "Status": [
        wire.Status(device_id="unit-1", state=s, at=MOMENT, version="0.1.0", outbox=2).to_json()
        for s in wire.LinkState
    ],
    "Feedback": [
        wire.Feedback(alert_id=ALERT_ID, state=s, at=MOMENT, incident=7).to_json()
        for s in wire.FeedbackState
    ],
}
SAMPLE_CASES = [
    pytest.param(name, payload, id=f"{name}-{i}")
    for name, payloads in SAMPLES.items()
    for i, payload in enumerate(payloads)
]
#: The wire dataclass behind each payload schema.
WIRE: dict[str, type[wire.Alert | wire.Status | wire.Feedback]] = {
    "Alert": wire.Alert,
    "Status": wire.Status,
    "Feedback": wire.Feedback,
}

#: The operation tags that say which side acts, and the side names in wire.py's docstring.
SIDES = {"device": "room-unit", "server": "server"}
#: The broker's ACL per side, and what stands for the device id in its topics.
ACL = {"room-unit": (DEVICE_RULES, "%u"), "server": (SERVER_RULES, "+")}
ACCESS = {"send": "write", "receive": "read"}


# -- reading the AsyncAPI document --------------------------------------------
@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    doc = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), f"{ASYNCAPI} must hold a mapping"
    return doc


def pointer(doc: dict[str, Any], ref: str) -> Any:
    """The node a local JSON pointer (``#/a/b``) names; fails the test if there is none."""
    assert ref.startswith("#/"), f"{ref!r} is not a reference inside the document"
    node: Any = doc
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), f"{ref!r}: {part!r} is not under a mapping"
        assert part in node, f"{ref!r} does not resolve: no {part!r}"
        node = node[part]
    return node


def resolve(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = pointer(doc, node["$ref"])
    return node


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def side_of(operation: dict[str, Any]) -> str:
    sides: set[str] = {t["name"] for t in operation.get("tags", [])} & set(SIDES.values())
    assert len(sides) == 1, f"operation {operation.get('title')!r} must name one side: {sides}"
    return sides.pop()


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(side, action, channel, operation) for every operation."""
    return [
        (side_of(op), op["action"], pointer(doc, op["channel"]["$ref"]), op)
        for op in doc["operations"].values()
    ]


def schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found = resolve(doc, doc["components"]["schemas"][name])
    assert isinstance(found, dict)
    return found


# -- a checker for the part of JSON Schema the document uses ------------------
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "string": lambda v: isinstance(v, str),
    # NOTE: a JSON true is a Python int; it is never a valid number here.
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
}
#: Keywords the checker enforces, and annotations it may skip.
CHECKED = {"type", "const", "enum", "required", "properties", "pattern", "format"}
CHECKED |= {"minimum", "maximum", "minLength", "maxLength"}
ANNOTATIONS = {"description", "default", "title"}


def violations(doc: dict[str, Any], node: Any, value: Any, where: str = "payload") -> list[str]:
    """What is wrong with ``value`` under the schema ``node`` (empty when it is valid)."""
    rule = resolve(doc, node)
    unknown = set(rule) - CHECKED - ANNOTATIONS
    assert not unknown, f"{where}: the checker does not implement {sorted(unknown)}"
    if "type" in rule and not TYPES[rule["type"]](value):
        return [f"{where} must be of type {rule['type']}, got {value!r}"]
    found = []
    if "const" in rule and value != rule["const"]:
        found.append(f"{where} must be {rule['const']!r}, got {value!r}")
    if "enum" in rule and value not in rule["enum"]:
        found.append(f"{where} must be one of {rule['enum']}, got {value!r}")
    if "pattern" in rule and not re.search(rule["pattern"], value):
        found.append(f"{where} {value!r} does not match {rule['pattern']}")
    if rule.get("format") == "date-time" and not RFC3339.fullmatch(value):
        found.append(f"{where} {value!r} is not an RFC 3339 date-time")
    if "minimum" in rule and value < rule["minimum"]:
        found.append(f"{where} must be at least {rule['minimum']}, got {value}")
    if "maximum" in rule and value > rule["maximum"]:
        found.append(f"{where} must be at most {rule['maximum']}, got {value}")
    if "minLength" in rule and len(value) < rule["minLength"]:
        found.append(f"{where} is shorter than {rule['minLength']}")
    if "maxLength" in rule and len(value) > rule["maxLength"]:
        found.append(f"{where} is longer than {rule['maxLength']}")
    found += [f"{where}.{key} is required" for key in rule.get("required", []) if key not in value]
    for key, sub in rule.get("properties", {}).items():
        if key in value:
            found += violations(doc, sub, value[key], f"{where}.{key}")
    return found


def refused(parse: Callable[[bytes], object], payload: bytes) -> bool:
    try:
        parse(payload)
    except wire.WireError:
        return True
    return False


def dump(data: dict[str, Any]) -> bytes:
    """JSON as the wire module writes it: sorted keys, no spaces."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


# -- the AsyncAPI document --------------------------------------------------------
def test_asyncapi_is_version_3_with_operations_apart_from_channels(
    asyncapi: dict[str, Any],
) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    for name, channel in asyncapi["channels"].items():
        assert not {"publish", "subscribe"} & set(channel), f"channel {name} uses 2.x operations"
    for name, op in asyncapi["operations"].items():
        assert op["action"] in ACCESS, name
        channel_ref = op["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/"), name
        for message in op["messages"]:
            # An operation's messages must be a subset of its channel's messages.
            assert message["$ref"].startswith(f"{channel_ref}/messages/"), name


def test_every_reference_in_asyncapi_resolves(asyncapi: dict[str, Any]) -> None:
    refs = list(references(asyncapi))
    assert refs
    for ref in refs:
        pointer(asyncapi, ref)


@pytest.mark.parametrize(
    ("topic", "kind"),
    [(wire.alert_topic, "alert"), (wire.status_topic, "status"), (wire.feedback_topic, "feedback")],
)
def test_every_topic_function_has_a_channel_with_its_address(
    asyncapi: dict[str, Any], topic: Callable[[str], str], kind: str
) -> None:
    by_address = {c["address"]: name for name, c in asyncapi["channels"].items()}
    address = topic("{device_id}")
    assert address in by_address, f"no channel for {address}"
    assert wire.parse_topic(topic("unit-1")) == ("unit-1", kind)
    assert by_address[address] == kind


def test_no_channel_lacks_a_topic_function(asyncapi: dict[str, Any]) -> None:
    made = {f("{device_id}") for f in (wire.alert_topic, wire.status_topic, wire.feedback_topic)}
    assert {c["address"] for c in asyncapi["channels"].values()} == made


def test_device_id_parameter_and_schema_use_the_wire_pattern(asyncapi: dict[str, Any]) -> None:
    for name, channel in asyncapi["channels"].items():
        placeholders = set(re.findall(r"\{(\w+)\}", channel["address"]))
        assert set(channel["parameters"]) == placeholders == {"device_id"}, name
        parameter = resolve(asyncapi, channel["parameters"]["device_id"])
        assert parameter["x-pattern"] == wire.DEVICE_ID_RE.pattern, name
    assert schema(asyncapi, "DeviceId")["pattern"] == wire.DEVICE_ID_RE.pattern
    assert schema(asyncapi, "AlertId")["pattern"] == wire.ALERT_ID_RE.pattern
    assert schema(asyncapi, "ContractVersion")["const"] == wire.VERSION


@pytest.mark.parametrize("name", list(WIRE))
def test_schema_properties_are_the_dataclass_fields(asyncapi: dict[str, Any], name: str) -> None:
    properties = schema(asyncapi, name)["properties"]
    fields = dataclasses.fields(WIRE[name])
    assert set(properties) == {f.name for f in fields}
    for f in fields:
        optional = f.name not in schema(asyncapi, name)["required"]
        if optional:
            assert properties[f.name]["default"] == f.default, f"{name}.{f.name}"


@pytest.mark.parametrize(
    ("name", "field", "enum"),
    [
        ("Alert", "kind", wire.AlertKind),
        ("Status", "state", wire.LinkState),
        ("Feedback", "state", wire.FeedbackState),
    ],
)
def test_schema_enums_are_the_wire_enums(
    asyncapi: dict[str, Any], name: str, field: str, enum: type[StrEnum]
) -> None:
    documented = resolve(asyncapi, schema(asyncapi, name)["properties"][field])["enum"]
    assert documented == [member.value for member in enum]


@pytest.mark.parametrize(("name", "payload"), SAMPLE_CASES)
def test_payload_the_code_sends_validates_against_its_schema(
    asyncapi: dict[str, Any], name: str, payload: bytes
) -> None:
    assert violations(asyncapi, schema(asyncapi, name), json.loads(payload)) == []


@pytest.mark.parametrize(("name", "payload"), SAMPLE_CASES)
def test_parser_requires_exactly_the_schemas_required_fields(
    asyncapi: dict[str, Any], name: str, payload: bytes
) -> None:
    rule = schema(asyncapi, name)
    data = json.loads(payload)
    for key in data:
        without = {k: v for k, v in data.items() if k != key}
        required = key in rule["required"]
        assert refused(WIRE[name].from_json, dump(without)) == required, f"{name} without {key}"
        assert bool(violations(asyncapi, rule, without)) == required, f"{name} without {key}"


def test_message_examples_are_what_the_code_sends(asyncapi: dict[str, Any]) -> None:
    for name, message in asyncapi["components"]["messages"].items():
        assert message["examples"], name
        rule = resolve(asyncapi, message["payload"])
        for example in message["examples"]:
            payload = example["payload"]
            assert violations(asyncapi, rule, payload) == [], example["name"]
            assert WIRE[name].from_json(dump(payload)).to_json() == dump(payload), example["name"]


def test_every_count_has_the_maximum_the_parser_enforces(asyncapi: dict[str, Any]) -> None:
    counts = {
        (name, key): rule
        for name in WIRE
        for key, rule in schema(asyncapi, name)["properties"].items()
        if resolve(asyncapi, rule).get("type") == "integer"
    }
    assert ("Alert", "seq") in counts
    for (name, key), rule in counts.items():
        if key == "v":
            continue
        assert resolve(asyncapi, rule).get("maximum") == wire.INT_MAX, f"{name}.{key}"
        sample = json.loads(SAMPLES[name][0])
        assert not refused(WIRE[name].from_json, dump({**sample, key: wire.INT_MAX}))
        assert refused(WIRE[name].from_json, dump({**sample, key: wire.INT_MAX + 1}))


@pytest.mark.parametrize(("name", "payload"), SAMPLE_CASES)
def test_payload_limit_is_the_one_the_parser_enforces(
    asyncapi: dict[str, Any], name: str, payload: bytes
) -> None:
    limit = asyncapi["components"]["messages"][name]["x-max-payload-bytes"]
    # JSON allows whitespace after the object: pad to exactly the limit, then one past it.
    assert not refused(WIRE[name].from_json, payload.ljust(limit))
    assert refused(WIRE[name].from_json, payload.ljust(limit + 1))


def test_operations_follow_the_wire_docstring(asyncapi: dict[str, Any]) -> None:
    assert wire.__doc__ is not None
    table = re.findall(
        r"^\s*(pb/\S+)\s+(device|server) -> (device|server), QoS (\d), (not retained|retained)"
        r'(?:, Last Will "(\w+)")?\s*$',
        wire.__doc__,
        re.MULTILINE,
    )
    assert len(table) == 3, "wire.py's docstring lists the three topics"
    ops = operations(asyncapi)
    for address, sender, receiver, qos, retained, will in table:
        on_topic = [(side, action, op) for side, action, ch, op in ops if ch["address"] == address]
        assert {(side, action) for side, action, _ in on_topic} == {
            (SIDES[sender], "send"),
            (SIDES[receiver], "receive"),
        }, address
        for _, action, op in on_topic:
            binding = op["bindings"]["mqtt"]
            assert (binding["qos"], binding["retain"]) == (int(qos), retained == "retained")
            last_will = op.get("x-last-will")
            if action == "send" and will:
                assert last_will is not None, f"{address}: the Last Will is not documented"
                assert (last_will["topic"], last_will["qos"], last_will["retain"]) == (
                    address,
                    wire.QOS,
                    True,
                )
            else:
                assert last_will is None, f"{address}: no Last Will in wire.py"
    assert {op["bindings"]["mqtt"]["qos"] for *_, op in ops} == {wire.QOS}


def test_operations_match_the_broker_acl(asyncapi: dict[str, Any]) -> None:
    for side, (rules, stand_in) in ACL.items():
        documented = {
            (ACCESS[action], channel["address"].replace("{device_id}", stand_in))
            for op_side, action, channel, _ in operations(asyncapi)
            if op_side == side
        }
        assert documented == set(rules), side


def test_subscriptions_are_the_ones_the_code_makes(asyncapi: dict[str, Any]) -> None:
    expected = {
        ("server", "alert"): wire.ALERT_SUBSCRIPTION,
        ("server", "status"): wire.STATUS_SUBSCRIPTION,
        ("room-unit", "feedback"): wire.feedback_topic("{device_id}"),
    }
    documented = {
        (side, wire.parse_topic(ch["address"].replace("{device_id}", "unit-1"))[1]): op[
            "x-subscription"
        ]
        for side, action, ch, op in operations(asyncapi)
        if action == "receive"
    }
    assert documented == expected


def test_servers_are_mqtt_311_on_the_ports_the_code_uses(
    asyncapi: dict[str, Any], tmp_path: Path
) -> None:
    servers = asyncapi["servers"]
    assert {s["protocolVersion"] for s in servers.values()} == {"3.1.1"}
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("only its presence matters to the config\n")
    unit = {"device": {"id": "unit-1"}, "mqtt": {"host": "broker.test", "password": "p" * 16}}
    with_tls = parse_config({**unit, "mqtt": {**unit["mqtt"], "ca_file": str(ca_file)}})
    plain = parse_config(unit)
    production, local = servers["production"], servers["local"]
    assert production["protocol"] == "secure-mqtt"
    assert production["host"].rsplit(":", 1)[1] == str(with_tls.mqtt.port)
    fields = Settings.model_fields
    assert local["protocol"] == "mqtt"
    assert local["host"] == f"{fields['mqtt_host'].default}:{fields['mqtt_port'].default}"
    assert fields["mqtt_port"].default == plain.mqtt.port


# -- the OpenAPI document -------------------------------------------------------
def generate_openapi() -> str:
    """The HTTP contract as the app declares it, in the form docs/openapi.json holds."""
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            demo=True,
            notifier="console",
            database_url=f"sqlite:///{Path(folder) / 'openapi.sqlite3'}",
            log_checkpoint_file=None,
        )
        server = build(settings, site=harness.sample_site())
        try:
            document = server.app.openapi()
        finally:
            server.services.stop()
            server.services.engine.dispose()
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


@pytest.fixture(scope="module")
def openapi_text() -> str:
    return generate_openapi()


def test_openapi_json_is_what_the_app_generates(openapi_text: str) -> None:
    assert OPENAPI.read_text(encoding="utf-8") == openapi_text, (
        "docs/openapi.json is stale: run `.venv/bin/python -m tests.test_docs`"
    )


def test_only_the_twilio_webhooks_have_no_bearer_token(openapi_text: str) -> None:
    document = json.loads(openapi_text)
    assert document["components"]["securitySchemes"]["HTTPBearer"] == {
        "scheme": "bearer",
        "type": "http",
    }
    open_routes = set()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if path in ("/api/v1/phone/enrol", "/api/v1/enrol"):
                # Enrolling a phone or a room unit: the one-time link's token or code in
                # the body is the proof (a new unit has no token yet: the code gives it one).
                assert "security" not in operation
            elif path.startswith("/api/v1/phone/"):
                # An enrolled phone's own signature (server/routes/mobile.py).
                assert operation.get("security") == [{"PhoneSignature": []}], f"{method} {path}"
            elif path.startswith("/api/"):
                assert operation.get("security") == [{"HTTPBearer": []}], f"{method} {path}"
            elif "security" not in operation:
                open_routes.add(f"{method.upper()} {path}")
    # The webhooks are guarded by the Twilio signature instead (server/webhooks.py).
    # The acknowledgement link is guarded by its signed single-use token (server/ack.py).
    assert open_routes == {
        "POST /twilio/sms",
        "POST /twilio/voice",
        "POST /twilio/status",
        "POST /twilio/call",
        "POST /twilio/call/code",
        "GET /ack/{token}",
        "POST /ack/{token}",
        # The map link of a page: signed, read only (server/console/maps.py).
        "GET /map/{token}",
        # Signing in has no principal yet by nature: the pre-session CSRF token guards
        # its forms, the one-time link's token the enrolment (server/routes/signin.py).
        "GET /sign-in",
        "POST /sign-in/password",
        "POST /sign-in/passkey/options",
        "POST /sign-in/passkey",
        "POST /sign-out",
        "GET /enrol/{token}",
        "POST /enrol/{token}/password",
        "POST /enrol/{token}/passkey/options",
        "POST /enrol/{token}/passkey",
        # Liveness says only "ok", for health checks that hold no secret
        # (server/routes/monitoring.py).
        "GET /healthz",
    }


def test_every_route_documents_the_errors_it_can_answer(openapi_text: str) -> None:
    document = json.loads(openapi_text)
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            where = f"{method.upper()} {path}"
            answers = operation["responses"]
            assert "413" in answers, f"{where}: the body limit holds on every route"
            if "security" in operation:
                assert "401" in answers, f"{where}: a token is checked, so 401"
            if path.startswith("/twilio/"):
                assert "403" in answers, f"{where}: the signature is checked, so 403"
            assert not [s for s in answers if s.startswith("5") and s != "503"], where
            for status, answer in answers.items():
                assert answer["description"], f"{where} {status}"
                if status not in ("204", "303"):  # no content, or a redirect
                    assert answer.get("content"), f"{where} {status}: what body comes back"


# -- the prose docs: everything they name exists ----------------------------------------
ROOT = DOCS.parent
#: Every Markdown file git tracks (or would: new files count before they are added).
MARKDOWN = sorted(
    ROOT / name
    for name in subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if (ROOT / name).is_file()
)
MARKDOWN_CASES = [pytest.param(path, id=str(path.relative_to(ROOT))) for path in MARKDOWN]
#: Files that still name what the restructure moved, and who brings them up to date.
STALE: dict[Path, str] = {}
#: The same cases, expected to fail for the files in STALE.
CASES_NOT_STALE_YET = [
    pytest.param(
        path,
        id=str(path.relative_to(ROOT)),
        marks=[pytest.mark.xfail(strict=True, reason=STALE[path])] if path in STALE else [],
    )
    for path in MARKDOWN
]
#: Paths the docs show that are not in the repository on purpose, and why.
NOT_IN_REPO = {
    "server/migrations/versions/0006_short_name.py": "CONTRIBUTING's example of a new migration",
    "panicbutton/log-entry/v1": "a hash's domain label in the log format (VERIFY.md)",
    "panicbutton/personal-data/v1": "a hash's domain label in the log format (VERIFY.md)",
}
#: Files the docs name that look like ``section.key`` (``device.toml``, ``selftest.last``).
FILE_NAME = re.compile(
    r"\w+\.(toml|py|md|ya?ml|json|service|sh|txt|key|crt|last|jsonl|zip|sqlite3)"
)
#: The first folder of a repository path; a path must start with one of these (or be a root file).
TOP = "panicbutton|device|server|demo|tests|docs|firmware_config|\\.ci"
REPO_PATH = re.compile(
    rf"(?<![\w./~$-])((?:{TOP})/[\w./-]*[\w/]|Makefile|Dockerfile|docker-compose\.yml"
    r"|pyproject\.toml|mkdocs\.yml|LICENSE|CHANGELOG\.md|CONTRIBUTING\.md|README\.md)(?![\w<{*])"
)
FENCE = re.compile(r"^ *```[^\n]*\n(.*?)^ *```", re.MULTILINE | re.DOTALL)
SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
COMMAND = re.compile(
    r"(?:^|bin/|sudo |&& |; |['\"])panicbutton (?:-v )?([a-z][\w-]*)([^\n|;&'\"]*)"
)
SETTING = re.compile(r"\bPANICBUTTON_[A-Z0-9]+(?:_[A-Z0-9]+)*")
DOTTED = re.compile(r"^((?:panicbutton|device|server|demo|tests)(?:\.\w+)+)(?:\(.*\))?$")
IMPORT = re.compile(r"\bfrom ((?:panicbutton|device|server|demo|tests)[\w.]*) import (\w+)")
ROUTE = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE) (/[^\s`?,)]*)")


def code_of(text: str) -> list[str]:
    """The code a Markdown text shows: its inline code spans and the lines of its code blocks
    (a line ending in a backslash joined to the next, as the shell does)."""
    lines = [
        line for block in FENCE.findall(text) for line in block.replace("\\\n", " ").splitlines()
    ]
    return [span.replace("\n", " ") for span in SPAN.findall(FENCE.sub("", text))] + lines


def exists(path: str) -> bool:
    """True for a file or folder of the repository, or a name in a module (``device/pins.X``)."""
    module, _, name = path.rpartition(".")
    return (ROOT / path).exists() or (name.isidentifier() and (ROOT / f"{module}.py").is_file())


def make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"(?m)^([\w.-]+):", makefile))


def subcommands() -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in cli_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return dict(actions[0].choices)


def verify_options() -> set[str]:
    """The options of ``panicbutton audit verify``, which has a parser of its own."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        verify_main(["--help"])
    return set(re.findall(r"--[\w-]+", out.getvalue()))


def resolves(dotted: str) -> bool:
    """True if ``dotted`` names a module, or an attribute of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            node: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(node, name):
                return False
            node = getattr(node, name)
        return True
    return False


def known_settings() -> set[str]:
    """The server's settings, and every PANICBUTTON_ name the repository's other files use."""
    names = {f"PANICBUTTON_{name.upper()}" for name in Settings.model_fields}
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        path = ROOT / name
        if path.suffix != ".md" and path.is_file() and path.stat().st_size < 1_000_000:
            names |= set(SETTING.findall(path.read_text(encoding="utf-8", errors="replace")))
    return names


@pytest.fixture(scope="module")
def settings_known() -> set[str]:
    return known_settings()


@pytest.mark.parametrize("path", CASES_NOT_STALE_YET)
def test_every_repository_path_the_docs_name_exists(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    named = {m for chunk in code_of(text) for m in REPO_PATH.findall(chunk)}
    missing = sorted(p for p in named if p not in NOT_IN_REPO and not exists(p))
    assert missing == [], f"{path.name} names paths that do not exist: {missing}"


@pytest.mark.parametrize("path", MARKDOWN_CASES)
def test_every_relative_link_in_the_docs_resolves(path: Path) -> None:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]
    missing = [t for t in targets if not (path.parent / t.split("#")[0]).exists()]
    assert missing == [], f"{path.name} links to files that do not exist: {missing}"


@pytest.mark.parametrize("path", MARKDOWN_CASES)
def test_every_make_target_the_docs_name_exists(path: Path) -> None:
    named = {
        m
        for chunk in code_of(path.read_text(encoding="utf-8"))
        for m in re.findall(r"(?:^|\s)make ([a-z][\w-]*)", chunk)
    }
    assert named - make_targets() == set(), (
        f"{path.name} names make targets that do not exist: {named - make_targets()}"
    )


@pytest.mark.parametrize("path", MARKDOWN_CASES)
def test_every_panicbutton_command_and_option_the_docs_show_exists(path: Path) -> None:
    commands = subcommands()
    wrong = []
    for chunk in code_of(path.read_text(encoding="utf-8")):
        for name, rest in COMMAND.findall(chunk):
            if name not in commands:
                wrong.append(f"panicbutton {name}")
                continue
            sub = commands[name]
            options = {o for a in sub._actions for o in a.option_strings}
            if name == "audit" and rest.startswith(" verify"):
                options = verify_options()
            wrong += [
                f"panicbutton {name} {o}" for o in re.findall(r"--[\w-]+", rest) if o not in options
            ]
            words = re.findall(r"^ ([a-z][\w-]*)", rest)
            choices = [a.choices for a in sub._actions if not a.option_strings and a.choices]
            if words and choices and words[0] not in choices[0]:
                wrong.append(f"panicbutton {name} {words[0]}")
    assert wrong == [], f"{path.name} shows commands the CLI does not have: {wrong}"


@pytest.mark.parametrize("path", MARKDOWN_CASES)
def test_every_panicbutton_setting_the_docs_name_exists(
    path: Path, settings_known: set[str]
) -> None:
    named = set(SETTING.findall(path.read_text(encoding="utf-8")))
    assert named - settings_known == set(), (
        f"{path.name} names settings nothing reads: {named - settings_known}"
    )


@pytest.mark.parametrize("path", CASES_NOT_STALE_YET)
def test_every_unit_setting_and_module_the_docs_name_exists(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    wrong = []
    for chunk in code_of(text):
        if FILE_NAME.fullmatch(chunk) or chunk in EVENT_TYPES:
            continue
        setting = re.fullmatch(r"(\w+)\.(\w+)", chunk)
        if setting and setting[1] in KNOWN:
            if setting[2] not in KNOWN[setting[1]] and not resolves(chunk):
                wrong.append(chunk)
            continue
        if (dotted := DOTTED.match(chunk)) and not resolves(dotted[1]):
            wrong.append(chunk)
        wrong += [f"{m}.{n}" for m, n in IMPORT.findall(chunk) if not resolves(f"{m}.{n}")]
    assert wrong == [], (
        f"{path.name} names unit settings or Python names that do not exist: {wrong}"
    )


@pytest.mark.parametrize("path", MARKDOWN_CASES)
def test_every_http_route_the_docs_name_exists(path: Path) -> None:
    # A parameter matches what the docs put there: {id} for {incident_id}, csv for {fmt}.
    contract = [
        (re.compile(re.sub(r"\\\{\w+\\\}", r"[^/]+", re.escape(route)) + "$"), methods)
        for route, methods in json.loads(OPENAPI.read_text(encoding="utf-8"))["paths"].items()
    ]
    named = {
        (method, route.rstrip("."))
        for method, route in ROUTE.findall(path.read_text(encoding="utf-8"))
        if "[redacted]" not in route  # a log line the docs quote
    }
    wrong = sorted(
        f"{method} {route}"
        for method, route in named
        if not any(rule.match(route) and method.lower() in methods for rule, methods in contract)
    )
    assert wrong == [], f"{path.name} names routes the app does not have: {wrong}"


def test_the_light_card_shows_every_state_and_pattern_of_the_indicator() -> None:
    card = (DOCS / "use" / "light-card.md").read_text(encoding="utf-8")
    assert indicator.__doc__ is not None
    # The docstring's reST table: its rule line gives the columns.
    rule = next(line for line in indicator.__doc__.splitlines() if line.startswith("==="))
    state, pattern, meaning = (m.start() for m in re.finditer(r"=+", rule))
    table = [
        (line[state:pattern].strip(), line[pattern:meaning].strip())
        for line in indicator.__doc__.splitlines()
        if re.match(r"[a-z_]+ ", line)
    ]
    rows = dict(re.findall(r'<tr data-state="(\w+)">\s*<td>.*?<small>(.+?)</small>', card))
    # One row more than the indicator has: the light off (no agent, no power), which is
    # told from "armed" by a wait longer than armed's whole period.
    armed = indicator.PATTERNS[indicator.Light.ARMED]
    assert armed is not None
    assert rows.pop("off", None) == f"dark for more than {sum(armed):g} s"
    assert set(rows) == {state.value for state in indicator.Light}
    assert {state: pattern for state, pattern in table if state in rows} == rows


def test_readme_is_what_a_newcomer_needs_first() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 150
    assert "make demo" in readme
    assert "make test" in readme
    assert "make docs-site" in readme


if __name__ == "__main__":
    OPENAPI.write_text(generate_openapi(), encoding="utf-8")
    print(f"wrote {OPENAPI}")
