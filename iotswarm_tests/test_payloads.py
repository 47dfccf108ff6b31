"""The CR1000X payload rules of the team's reference notes, one rule per test."""

import json
from datetime import datetime

import pytest

from iotswarm_pipelines import payloads
from iotswarm_pipelines.payloads import (
    PayloadFormat,
    basic_payload,
    cr1000x_payload,
    payload_json,
    value_type,
)

T0 = datetime(2024, 6, 1, 0, 30)


def _row(**values):
    return {"SITE_ID": "ALIC1", "DATE_TIME": T0, **values}


def _types(payload):
    return {f["name"]: f["type"] for f in payload["head"]["fields"]}


def test_reference_example_byte_for_byte():
    payload = cr1000x_payload(
        "ALIC1", [_row(TA_STD=0.05)], PayloadFormat(prog_name="CPU:iotswarm-1.0.CR1X")
    )
    assert payload_json(payload) == (
        '{"head": {"transaction": 0, "signature": 111111, "environment": {"station_name": '
        '"ALIC1", "table_name": "default", "model": "CR1000X", "serial_no": "65-76-73-67-49", '
        '"os_version": "CR1000X.Std.07.02", "prog_name": "CPU:iotswarm-1.0.CR1X"}, "fields": '
        '[{"name": "SITE_ID", "type": "xsd:string", "units": "", "process": "Smp", "settable": '
        'false}, {"name": "TA_STD", "type": "xsd:float", "units": "", "process": "Std", '
        '"settable": false}]}, "data": [{"time": "2024-06-01T00:30:00.000000", "vals": '
        '["ALIC1", 0.05]}]}'
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "xsi:nil"),
        ("ALIC1", "xsd:string"),
        ("2024-06-01T00:30:00", "xsd:dateTime"),
        (True, "xsd:boolean"),
        (T0, "xsd:dateTime"),
        (1, "xsd:short"),
        (-32768, "xsd:short"),
        (0, "xsd:int"),  # the quirk consumers rely on
        (32768, "xsd:int"),
        (2**31 - 1, "xsd:int"),
        (2**31, "xsd:long"),
        (-(2**63), "xsd:long"),
        (2**63, "xsd:integer"),
        (0.0, "xsd:float"),
        (12.34, "xsd:float"),
        (1e-39, "xsd:double"),
        (3.5e38, "xsd:double"),
        (-3.5e38, "xsd:double"),
    ],
)
def test_value_types(value, expected):
    assert value_type(value) == expected


@pytest.mark.parametrize(
    ("column", "process"),
    [
        ("TA_STD", "Std"),
        ("ws_avg", "Avg"),
        ("T_MAX", "Max"),
        ("T_Min", "Min"),
        ("X_MOM", "Mom"),
        ("P_TOT", "Tot"),
        ("UX_COV", "Cov"),
        ("COV_UX_UY", "Smp"),
        ("TA", "Smp"),
    ],
)
def test_process_from_suffix(column, process):
    assert payloads.process_of(column) == process


def test_date_time_becomes_time_case_insensitively_and_site_id_stays_a_field():
    row = {"SITE_ID": "BALRD", "date_time": T0, "TA": 1.5}
    payload = cr1000x_payload("BALRD", [row])
    assert [f["name"] for f in payload["head"]["fields"]] == ["SITE_ID", "TA"]
    assert payload["data"] == [{"time": "2024-06-01T00:30:00.000000", "vals": ["BALRD", 1.5]}]
    assert payload["head"]["environment"]["serial_no"] == "66-65-76-82-68"


def test_batch_types_are_the_highest_rank_over_all_rows():
    rows = [_row(A=None, B=5, C=0), _row(A=1.5, B=70000, C=7), _row(A=None, B=1, C=None)]
    payload = cr1000x_payload("ALIC1", rows)
    assert _types(payload) == {
        "SITE_ID": "xsd:string",
        "A": "xsd:float",
        "B": "xsd:int",
        "C": "xsd:int",
    }
    assert [d["vals"] for d in payload["data"]] == [
        ["ALIC1", None, 5, 0],
        ["ALIC1", 1.5, 70000, 7],
        ["ALIC1", None, 1, None],
    ]


def test_extreme_floats_mixed_with_ordinary_ones_make_a_double():
    payload = cr1000x_payload("ALIC1", [_row(A=0.0, B=1e-40, C=2.0)])
    assert _types(payload) == {
        "SITE_ID": "xsd:string",
        "A": "xsd:float",
        "B": "xsd:double",
        "C": "xsd:float",
    }


def test_nan_and_infinities_are_written_as_the_old_tool_wrote_them():
    payload = cr1000x_payload("ALIC1", [_row(A=float("nan"), B=float("inf"), C=-float("inf"))])
    assert payload_json(payload).endswith('"vals": ["ALIC1", NaN, Infinity, -Infinity]}]}')


def test_strict_json_writes_null_for_nan_and_infinities():
    row = _row(A=float("nan"), B=float("inf"), C=-float("inf"), D=1.0)
    for payload in (
        cr1000x_payload("ALIC1", [row], PayloadFormat(strict_json=True)),
        basic_payload(row, strict_json=True),
    ):
        text = payload_json(payload)
        assert "NaN" not in text and "Infinity" not in text
        json.loads(text, parse_constant=lambda name: pytest.fail(name))
    assert basic_payload(row)["B"] == float("inf")


def test_fast_text_equals_plain_json_dumps_for_many_patterns():
    rows = [
        _row(A=1.0, B=None, C=3),
        _row(A=None, B="x", C=0),
        _row(A=2.5, B="2020-01-01", C=2**40),
    ]
    for i in range(len(rows)):
        payload = cr1000x_payload("ALIC1", rows[i:])
        assert payload_json(payload) == json.dumps(payload)


def test_a_payload_whose_head_was_replaced_is_serialised_as_it_now_is():
    payload = cr1000x_payload("ALIC1", [_row(A=1.0)])
    payload["head"] = {"transaction": 1}
    assert json.loads(payload_json(payload))["head"] == {"transaction": 1}


def test_rows_without_date_time_or_no_rows_are_refused():
    with pytest.raises(ValueError, match="DATE_TIME"):
        cr1000x_payload("ALIC1", [{"SITE_ID": "ALIC1", "TA": 1.0}])
    with pytest.raises(ValueError, match="at least one row"):
        cr1000x_payload("ALIC1", [])


def test_basic_payload_is_the_row_as_json():
    assert basic_payload(_row(TA=1.5, N=None)) == {
        "SITE_ID": "ALIC1",
        "DATE_TIME": "2024-06-01T00:30:00.000000",
        "TA": 1.5,
        "N": None,
    }


def test_md5_from_the_cached_head_equals_the_md5_of_the_text():
    import hashlib

    rows = [_row(A=1.0, B=None, C=3), _row(A=2.0, B=None, C=4)]
    for payload in (cr1000x_payload("ALIC1", rows), basic_payload(rows[0])):
        text, md5 = payloads.payload_json_md5(payload)
        assert text == json.dumps(payload)
        assert md5 == hashlib.md5(text.encode()).hexdigest()


def test_rows_outside_the_common_ranks_do_not_reuse_a_common_pattern():
    # Same value types in both rows, but a zero integer and a tiny float change the ranks.
    first = cr1000x_payload("ALIC1", [_row(A=1.5, C=3)])
    second = cr1000x_payload("ALIC1", [_row(A=1e-40, C=0)])
    assert _types(first) == {"SITE_ID": "xsd:string", "A": "xsd:float", "C": "xsd:short"}
    assert _types(second) == {"SITE_ID": "xsd:string", "A": "xsd:double", "C": "xsd:int"}
