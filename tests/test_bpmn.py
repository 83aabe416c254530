"""Validation of untrusted diagrams at deploy: every rejection is a precise problem list."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from engine.core import bpmn

from .conftest import CORPUS, fixture_bytes

SIX = fixture_bytes("six_steps.bpmn")["six_steps.bpmn"]


def _errors(problems: list[bpmn.Problem]) -> list[bpmn.Problem]:
    return [p for p in problems if p.severity == "error"]


def _process(body: str, props: str = "", lanes: str = "", executable: str = "true") -> bytes:
    """A minimal diagram around ``body`` with the usual procedure properties."""
    props = props or (
        '<camunda:property name="code" value="1.000001"/>'
        '<camunda:property name="deadline" value="5 working days"/>'
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="d" targetNamespace="t">
  <bpmn:process id="P" name="Thủ tục thử" isExecutable="{executable}">
    <bpmn:extensionElements><camunda:properties>{props}</camunda:properties></bpmn:extensionElements>
    {lanes}
    {body}
  </bpmn:process>
</bpmn:definitions>""".encode()


LANE = (
    '<bpmn:laneSet id="ls"><bpmn:lane id="L" name="Chuyên viên">'
    '<bpmn:extensionElements><camunda:properties><camunda:property name="role" value="officer"/>'
    "</camunda:properties></bpmn:extensionElements>"
    "<bpmn:flowNodeRef>t1</bpmn:flowNodeRef><bpmn:flowNodeRef>t2</bpmn:flowNodeRef></bpmn:lane></bpmn:laneSet>"
)


def _task(task_id: str, allotment: str | None = "2 working days", tag: str = "userTask") -> str:
    props = (
        f'<bpmn:extensionElements><camunda:properties><camunda:property name="allotment" value="{allotment}"/>'
        "</camunda:properties></bpmn:extensionElements>"
        if allotment
        else ""
    )
    return f'<bpmn:{tag} id="{task_id}" name="Bước {task_id}">{props}</bpmn:{tag}>'


def _chain(*nodes: str) -> str:
    ids = ["s", *nodes, "e"]
    flows = "".join(f'<bpmn:sequenceFlow id="f{i}" sourceRef="{a}" targetRef="{b}"/>' for i, (a, b) in enumerate(zip(ids, ids[1:])))
    return '<bpmn:startEvent id="s"/><bpmn:endEvent id="e"/>' + flows


def test_valid_diagram_gives_a_definition() -> None:
    definition, problems = bpmn.analyse({"p.bpmn": _process(_task("t1") + _task("t2") + _chain("t1", "t2"), lanes=LANE)})
    assert problems == []
    assert definition is not None
    assert (definition.code, definition.name, str(definition.deadline)) == ("1.000001", "Thủ tục thử", "5 ngày làm việc")
    assert set(definition.steps) == {"t1", "t2"}
    assert definition.steps["t1"].role == "officer"


def test_zeebe_and_spiff_properties_are_read_too() -> None:
    zeebe = SIX.replace(b"camunda:properties", b"zeebe:properties").replace(b"camunda:property ", b"zeebe:property ")
    zeebe = zeebe.replace(b'xmlns:camunda="http://camunda.org/schema/1.0/bpmn"', b'xmlns:zeebe="http://camunda.org/schema/zeebe/1.0"')
    definition, problems = bpmn.analyse({"z.bpmn": zeebe})
    assert _errors(problems) == [] and definition is not None
    assert definition.steps["s4"].agency == "named:THUE"


@pytest.mark.parametrize(
    "body, lanes, expected_id, fragment",
    [
        (_task("t1", None) + _task("t2") + _chain("t1", "t2"), LANE, "t1", "no allotment"),
        (_task("t1", "ba ngày") + _task("t2") + _chain("t1", "t2"), LANE, "t1", "not a duration"),
        (_task("t1") + _task("t2") + _chain("t1", "t2"), "", "t1", "in no lane"),
        (_task("t1") + _task("t2") + _chain("t1", "t2"), LANE.replace("officer", "").replace('<camunda:property name="role" value=""/>', ""), "L", "has no role"),
        (_task("t1", "3 working days") + _task("t2", "3 working days") + _chain("t1", "t2"), LANE, "P", "more than the legal deadline"),
        (_task("t1", tag="manualTask") + _task("t2", tag="task") + '<bpmn:startEvent id="s"/>', LANE, "P", "no end event"),
    ],
)
def test_rule_violations_are_reported_with_element_and_line(body: str, lanes: str, expected_id: str, fragment: str) -> None:
    definition, problems = bpmn.analyse({"p.bpmn": _process(body, lanes=lanes)})
    assert definition is None
    matching = [p for p in _errors(problems) if fragment in p.message]
    assert matching, problems
    assert matching[0].element_id == expected_id
    assert matching[0].line and matching[0].line > 1
    assert matching[0].file == "p.bpmn"


def test_allotments_are_summed_along_the_longest_path_only() -> None:
    # Two parallel branches of 3 days each fit a 5-day deadline with 1-day steps around them? No:
    # the path is t0 (1) + branch (3) + t3 (1) = 5 ≤ 5; the branches are not added together.
    body = (
        _task("t0", "1 working day") + _task("t1", "3 working days") + _task("t2", "3 working days") + _task("t3", "1 working day")
        + '<bpmn:startEvent id="s"/><bpmn:endEvent id="e"/><bpmn:parallelGateway id="sp"/><bpmn:parallelGateway id="jn"/>'
        + "".join(
            f'<bpmn:sequenceFlow id="f{i}" sourceRef="{a}" targetRef="{b}"/>'
            for i, (a, b) in enumerate([("s", "t0"), ("t0", "sp"), ("sp", "t1"), ("sp", "t2"), ("t1", "jn"), ("t2", "jn"), ("jn", "t3"), ("t3", "e")])
        )
    )
    lanes = LANE.replace("<bpmn:flowNodeRef>t1</bpmn:flowNodeRef>", "".join(f"<bpmn:flowNodeRef>{n}</bpmn:flowNodeRef>" for n in ("t0", "t1", "t3")))
    definition, problems = bpmn.analyse({"p.bpmn": _process(body, lanes=lanes)})
    assert _errors(problems) == [], problems
    assert definition is not None


def test_unsupported_elements_are_reported_not_dropped() -> None:
    body = (
        _task("t1") + _task("t2") + _chain("t1", "t2")
        + '<bpmn:subProcess id="esp" triggeredByEvent="true"><bpmn:startEvent id="es"/><bpmn:endEvent id="ee"/></bpmn:subProcess>'
        + '<bpmn:complexGateway id="cx"/>'
        + '<bpmn:intermediateThrowEvent id="lk"><bpmn:linkEventDefinition id="ld" name="L"/></bpmn:intermediateThrowEvent>'
        + '<bpmn:boundaryEvent id="comp" attachedToRef="t1"><bpmn:compensateEventDefinition id="cd"/></bpmn:boundaryEvent>'
    )
    _, problems = bpmn.analyse({"p.bpmn": _process(body, lanes=LANE)})
    by_id = {p.element_id: p.message for p in _errors(problems)}
    assert "Event sub-processes" in by_id["esp"]
    assert "complexGateway" in by_id["cx"]
    assert "Link events" in by_id["lk"]
    assert "Compensation" in by_id["comp"]


def test_python_in_conditions_and_scripts_is_rejected() -> None:
    body = (
        _task("t1") + _task("t2")
        + '<bpmn:startEvent id="s"/><bpmn:endEvent id="e"/><bpmn:exclusiveGateway id="g" default="f3"/>'
        + '<bpmn:scriptTask id="sc"><bpmn:script>import os\nos.system("id")</bpmn:script></bpmn:scriptTask>'
        + '<bpmn:sequenceFlow id="f0" sourceRef="s" targetRef="t1"/><bpmn:sequenceFlow id="f1" sourceRef="t1" targetRef="g"/>'
        + "<bpmn:sequenceFlow id=\"f2\" sourceRef=\"g\" targetRef=\"t2\"><bpmn:conditionExpression>__import__('os').system('id')</bpmn:conditionExpression></bpmn:sequenceFlow>"
        + '<bpmn:sequenceFlow id="f3" sourceRef="g" targetRef="sc"/><bpmn:sequenceFlow id="f4" sourceRef="sc" targetRef="e"/>'
        + '<bpmn:sequenceFlow id="f5" sourceRef="t2" targetRef="e"/>'
    )
    _, problems = bpmn.analyse({"p.bpmn": _process(body, lanes=LANE)})
    by_id = {p.element_id: p for p in _errors(problems)}
    assert "condition" in by_id["f2"].message and "not allowed" in by_id["f2"].message
    assert "Script not allowed" in by_id["sc"].message


def test_timer_expressions_are_checked_and_timers_reported() -> None:
    body = (
        _task("t1") + _task("t2") + _chain("t1", "t2")
        + "<bpmn:intermediateCatchEvent id=\"tm\"><bpmn:timerEventDefinition id=\"td\"><bpmn:timeDuration>().__class__.__mro__</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>"
    )
    _, problems = bpmn.analyse({"p.bpmn": _process(body, lanes=LANE)})
    messages = [p.message for p in _errors(problems) if p.element_id == "tm"]
    assert any("Timer events" in m for m in messages)
    assert any("timer expression" in m for m in messages)


def test_call_activity_needs_its_called_process() -> None:
    definition, problems = bpmn.analyse(fixture_bytes("parallel_main.bpmn"))
    assert definition is None
    [problem] = _errors(problems)
    assert problem.element_id == "check" and "'Verify'" in problem.message
    definition, problems = bpmn.analyse(fixture_bytes("parallel_main.bpmn", "parallel_called.bpmn"))
    assert definition is not None and "verify" in definition.steps


def test_missing_metadata_is_named() -> None:
    _, problems = bpmn.analyse({"p.bpmn": _process(_task("t1") + _task("t2") + _chain("t1", "t2"), props=" ", lanes=LANE)})
    messages = " ".join(p.message for p in _errors(problems))
    assert "No procedure code" in messages


# ----------------------------------------------------------------- hostile XML


def test_malformed_xml_is_a_problem() -> None:
    _, problems = bpmn.analyse({"bad.bpmn": b"<bpmn:definitions><unclosed>"})
    [problem] = problems
    assert "not well-formed XML" in problem.message and problem.file == "bad.bpmn"


def test_xxe_to_a_local_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    xml = SIX.replace(
        b'<?xml version="1.0" encoding="UTF-8"?>',
        f'<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE d [<!ENTITY x SYSTEM "file://{secret}">]>'.encode(),
    ).replace("Thẩm định hồ sơ".encode(), b"&x;")
    definition, problems = bpmn.analyse({"xxe.bpmn": xml})
    assert definition is None
    assert "DOCTYPE" in problems[0].message
    assert "TOP-SECRET" not in repr(problems)


def test_billion_laughs_is_refused_quickly() -> None:
    entities = '<!ENTITY l0 "ha">' + "".join(f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    xml = f'<?xml version="1.0"?><!DOCTYPE d [{entities}]><bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL">&l9;</bpmn:definitions>'
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    definition, problems = bpmn.analyse({"lol.bpmn": xml.encode()})
    assert definition is None and problems
    assert time.perf_counter() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: no expansion


def test_external_dtd_is_refused() -> None:
    xml = SIX.replace(b'<?xml version="1.0" encoding="UTF-8"?>', b'<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE d SYSTEM "http://127.0.0.1:9/evil.dtd">')
    _, problems = bpmn.analyse({"dtd.bpmn": xml})
    assert "DOCTYPE" in problems[0].message


def test_oversized_file_is_refused_without_parsing() -> None:
    big = SIX + b"<!--" + b"x" * bpmn.MAX_FILE_BYTES + b"-->"
    _, problems = bpmn.analyse({"big.bpmn": big})
    [problem] = problems
    assert "limit" in problem.message


def test_long_chain_is_refused_without_crashing() -> None:
    n = 5000
    tasks = "".join(f'<bpmn:task id="t{i}"/>' for i in range(n))
    flows = "".join(f'<bpmn:sequenceFlow id="f{i}" sourceRef="t{i}" targetRef="t{i + 1}"/>' for i in range(n - 1))
    body = f'<bpmn:startEvent id="s"/>{tasks}<bpmn:endEvent id="e"/><bpmn:sequenceFlow id="fs" sourceRef="s" targetRef="t0"/>{flows}<bpmn:sequenceFlow id="fe" sourceRef="t{n - 1}" targetRef="e"/>'
    started = time.perf_counter()
    definition, problems = bpmn.analyse({"chain.bpmn": _process(body)})
    assert definition is None
    assert any("the limit is" in p.message for p in problems)
    assert time.perf_counter() - started < 10


def test_deep_nesting_is_refused_without_crashing() -> None:
    depth = 3000
    body = "".join(f'<bpmn:subProcess id="sp{i}">' for i in range(depth)) + "</bpmn:subProcess>" * depth
    definition, problems = bpmn.analyse({"deep.bpmn": _process(body)})
    assert definition is None and problems


def test_not_bpmn_at_all() -> None:
    _, problems = bpmn.analyse({"svg.bpmn": b'<svg xmlns="http://www.w3.org/2000/svg"/>'})
    assert "not <bpmn:definitions>" in problems[0].message
    _, problems = bpmn.analyse({"empty.bpmn": b"   "})
    assert "empty" in problems[0].message


# ----------------------------------------------------------------- the external corpus


MIWG = sorted((CORPUS / "miwg").glob("*.bpmn"))


def test_corpus_is_present() -> None:
    assert len(MIWG) >= 8, f"expected the MIWG reference files under {CORPUS / 'miwg'}"


@pytest.mark.parametrize("path", MIWG, ids=[p.name for p in MIWG])
def test_every_corpus_file_ends_in_a_procedure_or_a_problem_list(path: Path) -> None:
    definition, problems = bpmn.analyse({path.name: path.read_bytes()})
    if definition is None:
        errors = _errors(problems)
        assert errors, "a rejection must say why"
        for problem in errors:
            assert problem.message and problem.file == path.name
            if problem.element_id:
                assert problem.line, problem
    else:
        assert definition.code


def test_corpus_unsupported_elements_are_listed_by_id() -> None:
    path = CORPUS / "miwg" / "B.2.0.bpmn"
    _, problems = bpmn.analyse({path.name: path.read_bytes()})
    text = path.read_text()
    flagged = {p.element_id for p in problems}
    # Every boundary event and every event definition in the file is accounted for.
    import re

    for boundary in re.findall(r'<boundaryEvent[^>]*id="([^"]+)"', text):
        assert boundary in flagged, boundary
    assert any("Signal events" in p.message for p in problems)
    assert any("Loops and multi-instance" in p.message for p in problems)


def test_analyse_never_leaks_an_exception_on_garbage() -> None:
    for blob in (os.urandom(2000), b"\x00" * 10, b"<?xml version='1.0'?>", "<a>ư</a>".encode("utf-16")):
        definition, problems = bpmn.analyse({"g.bpmn": blob})
        assert definition is None and problems


def test_a_folder_is_grouped_into_procedures_with_the_processes_they_call() -> None:
    files = fixture_bytes("parallel_called.bpmn", "parallel_main.bpmn", "six_steps.bpmn")
    files["broken.bpmn"] = b"<not-closed"
    bundles = bpmn.procedure_bundles(files)
    assert [sorted(b) for b in bundles] == [["parallel_called.bpmn", "parallel_main.bpmn"], ["six_steps.bpmn"], ["broken.bpmn"]]
    assert all(bpmn.analyse(b)[0] is not None for b in bundles[:2])
