"""Every command of Campbell's MQTT command-and-control API, success and error, against a real
Mosquitto, asked as the team's client asks: the topics and payloads a real CR1000X gave
(campbell-mqtt-control's responses.md), with this swarm's device ID as ``clientId``.
"""

from __future__ import annotations

import json

import pytest

from iotswarm_pipelines import payloads
from iotswarm_pipelines.swarm.iot_core import MAX_PAYLOAD_BYTES
from iotswarm_tests.control_fixtures import (
    FORMAT,
    HISTORY_START,
    TABLE,
    TeamClient,
    file_server,  # noqa: F401 (fixture)
    swarm,  # noqa: F401 (fixture)
)

DEVICE = "ALIC1"


@pytest.fixture
def client(swarm):  # noqa: F811
    with TeamClient(swarm, DEVICE) as team:
        yield team


def state(device: str, state: str, **extra: str) -> bytes:
    return json.dumps({"clientId": device, "state": state, **extra}, separators=(",", ":")).encode()


def test_file_list_shows_the_running_program_on_cpu(client):
    got = client.command("fileControl", b'{"action": "list"}')
    assert got == [
        (
            client.topic("cr", "fileControl"),
            b'{"drive":"CPU:","clientID":"ALIC1","fileList":["iotswarm.CR1X"]}',
        )
    ]


def test_file_list_of_a_missing_drive(client):
    got = client.command("fileControl", b'{"action": "list", "drive": "USR"}')
    assert got == [
        (client.topic("cr", "fileControl"), b'{"error":"Directory \'USR:\' does not exist"}')
    ]


def test_file_delete_of_a_missing_file_sends_both_errors(client):
    got = client.command("fileControl", b'{"action": "delete", "fileName": "nope.crb"}', 2)
    topic = client.topic("cr", "fileControl")
    assert got == [
        (topic, b'{"error":"File does not exist"}'),
        (topic, b'{"error":"File delete failed"}'),
    ]


def test_program_download_loads_it_and_restarts(client, file_server):  # noqa: F811
    url = f"{file_server}/programs/testfile.crb"
    got = client.command("program", json.dumps({"url": url, "fileName": "testfile.crb"}).encode())
    got += client.until(lambda seen: len(seen) >= 1)  # the second online after the answer
    assert got == [
        (client.topic("state"), state(DEVICE, "online", fileTransfer="Program file download")),
        (client.topic("state"), state(DEVICE, "offline", reason="Loading program")),
        (client.topic("state"), state(DEVICE, "online")),
        (client.topic("cr", "program"), b'{"success":"Program loaded successfully"}'),
        (client.topic("state"), state(DEVICE, "online")),
    ]
    listing = client.command("fileControl", b'{"action": "list"}')
    assert json.loads(listing[0][1])["fileList"] == ["iotswarm.CR1X", "testfile.crb"]


def test_program_download_a_404_is_still_a_download(client, file_server):  # noqa: F811
    url = f"{file_server}/programs/missing.crb"
    got = client.command("program", json.dumps({"url": url, "fileName": "other.crb"}).encode())
    assert got[-1] == (client.topic("cr", "program"), b'{"success":"Program loaded successfully"}')


def test_program_download_from_nowhere_fails(client):
    payload = b'{"url": "sdfsdfs/testfile.crb", "fileName": "testfile2.crb"}'
    got = client.command("program", payload)
    assert got == [
        (client.topic("state"), state(DEVICE, "online", fileTransfer="Program file download")),
        (client.topic("cr", "program"), b'{"error":"Program download failed"}'),
    ]


def test_edit_constants_of_a_program_without_a_constant_table(client):
    # the previous tests left a downloaded program running: it has no ConstTable
    got = client.command("editConst", b'{"const1": "12"}')
    assert got == [(client.topic("cr", "editConst"), b'{"error":"No constant table to edit"}')]


def test_file_run_and_stop(client):
    got = client.command("fileControl", b'{"action": "run", "fileName": "iotswarm.CR1X"}')
    assert got == [
        (client.topic("state"), state(DEVICE, "offline", reason="Running program")),
        (client.topic("cr", "fileControl"), b'{"success":"Program running"}'),
    ]
    got = client.command("fileControl", b'{"action": "run", "filename": "iotswarm.CR1X"}')
    assert got == [(client.topic("cr", "fileControl"), b'{"error":"File does not exist"}')]


def test_edit_constants_of_the_running_program(client):
    got = client.command("editConst", b'{"const1": "12"}')
    assert got == [(client.topic("cr", "editConst"), b'{"success":"No constant table changes"}')]
    got = client.command("editConst", b'{"ScanInterval": "5"}')
    assert got == [
        (client.topic("state"), state(DEVICE, "offline", reason="Changed constants, recompiling")),
        (client.topic("cr", "editConst"), b'{"success":"Editing constants succeeded"}'),
    ]


def test_file_delete_then_stop(client):
    got = client.command("fileControl", b'{"action": "delete", "fileName": "testfile.crb"}')
    assert got == [(client.topic("cr", "fileControl"), b'{"success":"File deleted"}')]
    got = client.command("fileControl", b'{"action": "stop"}')
    assert got == [
        (client.topic("state"), state(DEVICE, "offline", reason="Stopping program")),
        (client.topic("cr", "fileControl"), b'{"success":"Program stopped"}'),
    ]


def test_settings_set_apply_and_publish(client):
    topic = client.topic("cr", "setting")
    got = client.command("setting", b'{"action": "set", "name": "PakBusAddress", "value": "1"}')
    assert got == [(topic, b'{"success":"Settings set successfully"}')]
    payload = b'{"action": "set", "name": "PakBusAddress", "value": "3", "apply": "true"}'
    assert client.command("setting", payload) == [
        (topic, b'{"success":"Settings applied, no reboot required"}')
    ]
    # numeric settings come back padded, as the team's client expects (it strips them)
    got = client.command("setting", b'{"action": "publish", "name": "PakBusAddress"}')
    assert got == [(topic, b'{"setting":"PakBusAddress","value":"     3"}')]
    got = client.command("setting", b'{"action": "apply", "apply": "true"}')
    assert got == [(topic, b'{"success":"Settings applied, no reboot required"}')]
    got = client.command("setting", b'{"action": "publish", "name": "EthernetPower"}')
    assert got == [(topic, b'{"setting":"EthernetPower","value":"2"}')]


def test_settings_errors(client):
    topic = client.topic("cr", "setting")
    payload = b'{"action": "set", "name": "abc", "value": "3", "apply": "true"}'
    assert client.command("setting", payload) == [(topic, b'{"error":"Invalid setting: abc"}')]
    got = client.command("setting", b'{"action": "publish", "name": "EthernetPowder"}')
    assert got == [(topic, b'{"error":"Invalid setting: EthernetPowder"}')]


def test_a_setting_survives_a_reboot(client):
    client.command(
        "setting", b'{"action": "set", "name": "UTCOffset", "value": "3600", "apply": true}'
    )
    client.command("reboot", b'{"action": "reboot"}')
    got = client.command("setting", b'{"action": "publish", "name": "UTCOffset"}')
    assert got == [(client.topic("cr", "setting"), b'{"setting":"UTCOffset","value":"  3600"}')]


def test_reboot_goes_offline_comes_back_and_answers(client):
    got = client.command("reboot", b'{"action": "reboot"}')
    assert got == [
        (client.topic("state"), state(DEVICE, "offline", reason="Reboot command")),
        (client.topic("state"), state(DEVICE, "online")),
        (client.topic("cr", "reboot"), b'{"success":"Reboot complete"}'),
    ]


def test_get_and_set_public_variables(swarm, client):  # noqa: F811
    got = client.command("getVar", b'{"name": "BattV"}')
    body = json.loads(got[0][1])
    assert got[0][0] == client.topic("cr", "getVar")
    assert body["name"] == "BattV" and 11.0 < body["value"] < 14.5
    got = client.command("getVar", b'{"name": "PA"}')  # a field of the table's current row
    body = json.loads(got[0][1])
    assert body["name"] == "PA" and body["value"] in {r["PA"] for r in swarm.source.rows[DEVICE]}
    got = client.command("setVar", b'{"name": "BattV", "value": "1.2"}')
    assert got == [(client.topic("cr", "setVar"), b'{"success":"Set variable succeeded"}')]


def test_variable_errors(client):
    got = client.command("setVar", b'{"name": "VarOne", "value": "1.2"}')
    assert got == [(client.topic("cr", "setVar"), b'{"error":"Set variable failed"}')]
    got = client.command("getVar", b'{"name": "VarTwo"}')
    assert got == [(client.topic("cr", "getVar"), b'{"error":"Invalid field: VarTwo"}')]


def test_talk_thru_answers(client):
    topic = client.topic("cr", "talkThru")
    got = client.command("talkThru", b'{"comPort": "ComU6", "outString": "heyyo"}')
    assert got == [(topic, b'{"response":"Illegal ComPort"}')]
    got = client.command("talkThru", b'{"comPort": "ComC1", "outString": "heyyo"}')
    assert got == [(topic, b'{"response":"ComPort must be open to use MQTT Talk Thru"}')]


def test_historic_data_of_an_unknown_table(client):
    payload = b'{"table": "publish", "start": "2025-05-01T03:16:51", "end": "2025-05-01T03:16:51"}'
    got = client.command("historicData", payload)
    assert got == [
        (client.topic("cr", "historicData"), b'{"error":"Historic Data: Table does not exist!"}')
    ]


def test_historic_data_sends_the_window_once_in_order_under_128_kb(swarm, client):  # noqa: F811
    rows = swarm.source.rows[DEVICE][10:510]  # 500 rows, about 600 KB as payloads
    start, end = rows[0]["DATE_TIME"], rows[-1]["DATE_TIME"]
    payload = {"table": TABLE, "start": start.isoformat(), "end": end.isoformat()}
    client.send("historicData", json.dumps(payload).encode())
    topic = client.topic("cr", f"historicData/{TABLE}/cj")
    got: list[tuple[str, bytes]] = []
    times: list[str] = []
    while len(times) < len(rows):
        got += client.until(lambda seen: len(seen) >= 1)
        times = [r["time"] for _, p in got for r in json.loads(p)["data"]]
    assert {t for t, _ in got} == {topic}
    assert times == [payloads.format_time(r["DATE_TIME"]) for r in rows]
    assert len(got) > 1 and all(len(p) <= MAX_PAYLOAD_BYTES for _, p in got)
    # each message is what the device would publish for those rows, byte for byte
    first = len(json.loads(got[0][1])["data"])
    built = payloads.payload_json(payloads.cr1000x_payload(DEVICE, rows[:first], FORMAT))
    assert got[0][1] == built.encode()
    assert client.drain() == []


def test_historic_data_of_an_empty_window_sends_the_head(client):
    payload = b'{"table": "default", "start": "2001-04-01T03:16:51", "end": "2001-05-01T10:16:51"}'
    got = client.command("historicData", payload)
    body = json.loads(got[0][1])
    assert got[0][0] == client.topic("cr", "historicData/default/cj")
    assert body["data"] == [] and body["head"]["environment"]["station_name"] == DEVICE
    assert body["head"]["fields"][0]["name"] == "SITE_ID"


def test_historic_data_start_is_inclusive(swarm, client):  # noqa: F811
    moment = HISTORY_START.isoformat()
    payload = json.dumps({"table": TABLE, "start": moment, "end": moment}).encode()
    got = client.command("historicData", payload)
    assert [r["time"] for r in json.loads(got[0][1])["data"]] == [
        payloads.format_time(HISTORY_START)
    ]


def test_os_download_flashes_and_restarts(client, file_server):  # noqa: F811
    url = f"{file_server}/os/CR1000X.Std.08.01.obj"
    client.send("OS", json.dumps({"url": url}).encode())
    online = state(DEVICE, "online")
    got = client.until(lambda seen: (client.topic("state"), online) in seen)
    assert got == [
        (client.topic("state"), state(DEVICE, "online", fileTransfer="OS file download")),
        (client.topic("state"), state(DEVICE, "online", fileTransfer="Flashing OS")),
        (client.topic("state"), state(DEVICE, "offline", reason="OS update")),
        (client.topic("state"), online),
    ]


def test_os_download_failure_tries_three_times(client):
    got = client.command("OS", b'{"url": "fakeurl"}')
    download = (client.topic("state"), state(DEVICE, "online", fileTransfer="OS file download"))
    assert got == [download] * 3 + [(client.topic("cr", "OS"), b'{"error":"OS Download Failed"}')]


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        (None, b'{"error":"MQTT Config file download failed, code: 0"}'),
        ("/mqtt/bad.bin", b'{"error":"MQTT Config file parse failed"}'),
    ],
)
def test_mqtt_config_download_errors(client, file_server, path, answer):  # noqa: F811
    url = "sdfsdfs/testfile.crb" if path is None else f"{file_server}{path}"
    got = client.command("mqttConfig", json.dumps({"url": url}).encode())
    assert got == [
        (client.topic("state"), state(DEVICE, "online", fileTransfer="MQTT config file download")),
        (client.topic("cr", "mqttConfig"), answer),
    ]


def test_mqtt_config_loads_a_good_file(client, file_server):  # noqa: F811
    got = client.command("mqttConfig", json.dumps({"url": f"{file_server}/mqtt/good.bin"}).encode())
    assert got == [
        (client.topic("state"), state(DEVICE, "online", fileTransfer="MQTT config file download")),
        (client.topic("state"), state(DEVICE, "offline", reason="Loading MQTT Configuration")),
        (client.topic("cr", "mqttConfig"), b'{"success":"MQTT configuration file loaded"}'),
    ]
    client.wait_for_state("online", DEVICE)  # it comes back with the new configuration


def test_a_clone_answers_under_its_own_name(swarm):  # noqa: F811
    with TeamClient(swarm, "ALIC1-00001") as clone:
        got = clone.command("fileControl", b'{"action": "list"}')
    assert json.loads(got[0][1])["clientID"] == "ALIC1-00001"
