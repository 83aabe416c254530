"""Reading and validating uploaded BPMN diagrams (untrusted input).

:func:`analyse` turns a set of BPMN files into either a
:class:`ProcedureDefinition` (metadata, steps, the parsed executable spec) or a
list of :class:`Problem` — each with the file, element id, line and a message a
process designer can act on. Nothing in an uploaded file is ever run here:

* XML is parsed by lxml with entity resolution, DTD loading and network access
  off, under a size limit; a DOCTYPE is refused outright;
* the BPMN 2.0 XML schema (the copy SpiffWorkflow ships) is checked;
* every element the engine does not run is reported, never dropped;
* conditions and scripts must be in the safe expression language;
* user and manual tasks must sit in a lane mapped to a role and carry an
  allotment, and allotments along any path must fit in the legal deadline.

Metadata are key–value *extension properties* (Camunda Modeler / bpmn.io
properties panel: "Extension properties"; ``camunda:property``,
``zeebe:property`` and ``spiffworkflow:property`` are all read). Keys on the
process: ``code``, ``name``, ``field``, ``level``, ``deadline``, ``deadline_online``,
``cutoff``; on a lane: ``role``, ``agency``; on a user/manual task: ``allotment``
(and optionally ``allotment_online``, and ``role``/``agency`` to override the lane's).
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping

from lxml import etree

from . import expressions
from .durations import Duration, DurationError, parse_duration

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_FLOW_NODES",
    "MAX_SUBPROCESS_DEPTH",
    "FormField",
    "Problem",
    "ProcedureDefinition",
    "StepDefinition",
    "analyse",
    "content_hash",
    "parse_xml",
    "procedure_bundles",
]

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
BPMNDI_NS = "http://www.omg.org/spec/BPMN/20100524/DI"
CAMUNDA_NS = "http://camunda.org/schema/1.0/bpmn"
ZEEBE_NS = "http://camunda.org/schema/zeebe/1.0"
SPIFF_NS = "http://spiffworkflow.org/bpmn/schema/1.0/core"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

#: Largest BPMN file accepted, in bytes.
MAX_FILE_BYTES = 2 * 1024 * 1024
#: Most flow nodes in one process (SpiffWorkflow's parser recurses per flow).
MAX_FLOW_NODES = 300
#: Deepest nesting of sub-processes inside one process.
MAX_SUBPROCESS_DEPTH = 10
#: Most problems reported for one deployment (the rest are summarised).
MAX_PROBLEMS = 200

_PROPERTY_PATHS = [
    (f"{{{CAMUNDA_NS}}}properties", f"{{{CAMUNDA_NS}}}property"),
    (f"{{{ZEEBE_NS}}}properties", f"{{{ZEEBE_NS}}}property"),
    (f"{{{SPIFF_NS}}}properties", f"{{{SPIFF_NS}}}property"),
]


def _b(tag: str) -> str:
    return f"{{{BPMN_NS}}}{tag}"


HUMAN_TASKS = {_b("userTask"), _b("manualTask"), _b("task")}
#: Flow elements the engine runs, and how it runs them.
SUPPORTED_FLOW_NODES = {
    _b("startEvent"),
    _b("endEvent"),
    _b("userTask"),
    _b("manualTask"),
    _b("task"),
    _b("scriptTask"),
    _b("exclusiveGateway"),
    _b("parallelGateway"),
    _b("inclusiveGateway"),
    _b("callActivity"),
    _b("subProcess"),
    _b("intermediateThrowEvent"),
}
#: Elements inside a process that carry no behaviour of their own.
NEUTRAL_ELEMENTS = {
    _b(t)
    for t in (
        "sequenceFlow",
        "laneSet",
        "lane",
        "childLaneSet",
        "flowNodeRef",
        "documentation",
        "extensionElements",
        "incoming",
        "outgoing",
        "conditionExpression",
        "script",
        "textAnnotation",
        "text",
        "association",
        "group",
        "dataObject",
        "dataObjectReference",
        "dataState",
        "property",
    )
}
_EVENT_DEFINITIONS = {
    "timerEventDefinition": "timer events (deadlines and reminders are declared with the 'deadline' and 'allotment' properties instead)",
    "messageEventDefinition": "message events",
    "signalEventDefinition": "signal events",
    "errorEventDefinition": "error events",
    "escalationEventDefinition": "escalation events",
    "conditionalEventDefinition": "conditional events",
    "compensateEventDefinition": "compensation",
    "linkEventDefinition": "link events",
    "cancelEventDefinition": "cancel events",
}
_TOP_LEVEL_OK = {
    _b(t)
    for t in ("process", "collaboration", "documentation", "extensionElements", "category", "itemDefinition", "message", "signal", "error", "escalation")
} | {f"{{{BPMNDI_NS}}}BPMNDiagram"}
_LEVELS = {"commune", "district", "province", "ministry", "xã", "huyện", "tỉnh", "bộ", "cấp xã", "cấp huyện", "cấp tỉnh", "cấp bộ"}
_LOCAL = {"process", "subProcess", "transaction", "adHocSubProcess"}


@dataclass(frozen=True)
class Problem:
    """One reason a diagram cannot be deployed (or, as a warning, a remark)."""

    message: str
    element_id: str | None = None
    line: int | None = None
    file: str | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p)
        subject = f" [{self.element_id}]" if self.element_id else ""
        return f"{where}{subject} {self.severity}: {self.message}".strip()

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "element_id": self.element_id, "line": self.line, "file": self.file, "severity": self.severity}


@dataclass(frozen=True)
class FormField:
    """A field of a step's form (``camunda:formField``)."""

    id: str
    label: str
    type: str
    required: bool = False


@dataclass(frozen=True)
class StepDefinition:
    """A human step of a procedure: who does it and how long they have."""

    step_id: str
    name: str
    process_id: str
    lane_id: str | None
    lane_name: str | None
    role: str | None
    agency: str | None
    allotment: Duration | None
    form: tuple[FormField, ...] = ()
    #: A separate allotment for dossiers filed online (``allotment_online``), if the step declares one.
    allotment_online: Duration | None = None
    #: The step's result document must carry a valid digital signature (``signed_result``).
    signed_result: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "step_id": self.step_id,
            "name": self.name,
            "process_id": self.process_id,
            "lane_id": self.lane_id,
            "lane_name": self.lane_name,
            "role": self.role,
            "agency": self.agency,
            "allotment": str(self.allotment) if self.allotment else None,
            "allotment_amount": str(self.allotment.amount) if self.allotment else None,
            "allotment_unit": self.allotment.unit if self.allotment else None,
            "allotment_online": str(self.allotment_online) if self.allotment_online else None,
            "allotment_online_amount": str(self.allotment_online.amount) if self.allotment_online else None,
            "allotment_online_unit": self.allotment_online.unit if self.allotment_online else None,
            "form": [f.__dict__ for f in self.form],
            "signed_result": self.signed_result,
        }


@dataclass
class ProcedureDefinition:
    """What a valid deployment describes; ``spec`` is the parsed, runnable form."""

    code: str
    name: str
    field: str | None
    level: str | None
    deadline: Duration
    cutoff: str | None
    process_id: str
    steps: dict[str, StepDefinition]
    financial_obligation: bool
    escalation: list[tuple[str, float]] | None
    content_hash: str
    warnings: list[Problem] = field(default_factory=list)
    #: The legal deadline for dossiers filed online (``deadline_online``), where it differs.
    deadline_online: Duration | None = None
    #: The raw ``fees`` and ``fees_before_processing`` properties (read by :mod:`engine.fees`).
    fee_properties: dict[str, str | None] = field(default_factory=dict)
    spec: Any = None  # runtime.ProcedureSpec

    def metadata(self) -> dict[str, Any]:
        """JSON-ready metadata stored with the version."""
        return {
            "code": self.code,
            "name": self.name,
            "field": self.field,
            "level": self.level,
            "deadline": str(self.deadline),
            "deadline_amount": str(self.deadline.amount),
            "deadline_unit": self.deadline.unit,
            "cutoff": self.cutoff,
            "deadline_online": str(self.deadline_online) if self.deadline_online else None,
            "deadline_online_amount": str(self.deadline_online.amount) if self.deadline_online else None,
            "deadline_online_unit": self.deadline_online.unit if self.deadline_online else None,
            **self.fee_properties,
            "financial_obligation": self.financial_obligation,
            "escalation": [list(rung) for rung in self.escalation] if self.escalation else None,
            "process_id": self.process_id,
            "steps": {k: v.as_dict() for k, v in self.steps.items()},
        }


def content_hash(files: Mapping[str, bytes]) -> str:
    """Identity of a deployment's content: file names do not matter, order does not."""
    digests = sorted(hashlib.sha256(content).hexdigest() for content in files.values())
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


_DOCTYPE_MARKERS = [m.encode(enc) for m in ("<!DOCTYPE", "<!doctype", "<!ENTITY") for enc in ("utf-8", "utf-16-le", "utf-16-be")]


def _doctype_problem(filename: str) -> Problem:
    return Problem("A DOCTYPE declaration (DTD, XML entities) is not allowed in a BPMN file; remove it.", line=1, file=filename)


def _xml_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
    )


def parse_xml(content: bytes, filename: str) -> tuple[Any, list[Problem]]:
    """Parse untrusted XML safely; return ``(root or None, problems)``."""
    if len(content) > MAX_FILE_BYTES:
        return None, [Problem(f"File is {len(content):,} bytes; the limit is {MAX_FILE_BYTES:,} bytes.", file=filename)]
    if not content.strip():
        return None, [Problem("File is empty.", file=filename)]
    if any(marker in content for marker in _DOCTYPE_MARKERS):
        return None, [_doctype_problem(filename)]
    try:
        root = etree.fromstring(content, _xml_parser())
    except etree.XMLSyntaxError as err:
        line = err.lineno if getattr(err, "lineno", None) else None
        return None, [Problem(f"The file is not well-formed XML: {err.msg}.", line=line, file=filename)]
    except (ValueError, MemoryError, RecursionError) as err:
        return None, [Problem(f"The file cannot be read as XML: {err}.", file=filename)]
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        return None, [_doctype_problem(filename)]
    if root.tag != _b("definitions"):
        return None, [Problem(f"The root element is <{etree.QName(root).localname}>, not <bpmn:definitions> of BPMN 2.0 ({BPMN_NS}).", line=root.sourceline, file=filename)]
    return root, []


_SCHEMA: etree.XMLSchema | None = None


def _schema() -> etree.XMLSchema:
    global _SCHEMA
    if _SCHEMA is None:
        import SpiffWorkflow.bpmn.parser as spiff_parser

        path = os.path.join(os.path.dirname(spiff_parser.__file__), "schema", "BPMN20.xsd")
        _SCHEMA = etree.XMLSchema(etree.parse(path, _xml_parser()))
    return _SCHEMA


def _check_schema(root: Any, filename: str) -> list[Problem]:
    schema = _schema()
    if schema.validate(root):
        return []
    problems = []
    for error in list(schema.error_log)[:50]:
        message = error.message.replace(f"{{{BPMN_NS}}}", "bpmn:")
        problems.append(Problem(f"Not valid BPMN 2.0: {message}", line=error.line or None, file=filename))
    return problems


def extension_properties(element: Any) -> dict[str, str]:
    """The designer's key–value extension properties of ``element``."""
    result: dict[str, str] = {}
    ext = element.find(_b("extensionElements"))
    if ext is None:
        return result
    for container_tag, property_tag in _PROPERTY_PATHS:
        for container in ext.findall(container_tag):
            for prop in container.findall(property_tag):
                name = (prop.get("name") or "").strip()
                if name:
                    result[name] = (prop.get("value") or "").strip()
    return result


def _form_fields(element: Any) -> tuple[FormField, ...]:
    ext = element.find(_b("extensionElements"))
    if ext is None:
        return ()
    fields = []
    for form_field in ext.iter(f"{{{CAMUNDA_NS}}}formField"):
        required = any(
            c.get("name") == "required" for c in form_field.iter(f"{{{CAMUNDA_NS}}}constraint")
        )
        fields.append(
            FormField(
                id=form_field.get("id", ""),
                label=form_field.get("label") or form_field.get("id", ""),
                type=form_field.get("type") or "string",
                required=required,
            )
        )
    return tuple(fields)


def _where(element: Any, filename: str) -> dict[str, Any]:
    return {"element_id": element.get("id"), "line": element.sourceline, "file": filename}


class _Analysis:
    """Collects problems over all files of one deployment."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self.files = files
        self.problems: list[Problem] = []
        self.roots: dict[str, Any] = {}
        self.processes: dict[str, tuple[Any, str]] = {}  # id → (element, filename)

    def add(self, message: str, element: Any = None, filename: str | None = None, severity: str = "error", **kw: Any) -> None:
        where = _where(element, filename or "") if element is not None else {"file": filename}
        where.update(kw)
        self.problems.append(Problem(message, severity=severity, **where))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def analyse(files: Mapping[str, bytes]) -> tuple[ProcedureDefinition | None, list[Problem]]:
    """Validate BPMN ``files`` (name → content) as one procedure.

    Returns ``(definition, problems)``: the definition is None whenever a problem
    has severity ``error``. Never raises on bad input.

    Example::

        definition, problems = analyse({"khai-sinh.bpmn": data})
        if definition is None:
            for p in problems: print(p)
    """
    a = _Analysis(files)
    if not files:
        return None, [Problem("No BPMN file was given.")]
    for filename, content in files.items():
        root, problems = parse_xml(content, filename)
        a.problems.extend(problems)
        if root is None:
            continue
        a.roots[filename] = root
        a.problems.extend(_check_schema(root, filename))
        _check_top_level(a, root, filename)
        for process in root.iter(_b("process")):
            pid = process.get("id")
            if pid in a.processes:
                a.add(f"Process id '{pid}' appears in two files; ids must be unique across a deployment.", process, filename)
            a.processes[pid] = (process, filename)
    if not a.roots:
        return None, _capped(a.problems)

    steps: dict[str, StepDefinition] = {}
    for process, filename in a.processes.values():
        _check_process(a, process, filename, steps)

    main = _main_process(a)
    definition = None
    if main is not None:
        definition = _procedure_metadata(a, main, steps)
        if definition is not None:
            _check_paths(a, main[0], definition.deadline, definition.deadline_online)
    if not a.errors and definition is not None:
        spec = _parse_with_spiff(a, definition.process_id)
        if spec is not None and not a.errors:
            definition.spec = spec
            definition.warnings = [p for p in a.problems if p.severity != "error"]
            return definition, _capped(a.problems)
    return None, _capped(a.problems)


def _capped(problems: list[Problem]) -> list[Problem]:
    problems = sorted(problems, key=lambda p: (p.file or "", p.line or 0))
    if len(problems) <= MAX_PROBLEMS:
        return problems
    rest = len(problems) - MAX_PROBLEMS
    return problems[:MAX_PROBLEMS] + [Problem(f"… and {rest} more problems not shown.")]


def _check_top_level(a: _Analysis, root: Any, filename: str) -> None:
    for child in root:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions
        if child.tag in _TOP_LEVEL_OK:
            continue
        name = etree.QName(child).localname
        a.add(f"<{name}> is not supported by the engine and would be ignored; remove it.", child, filename)
    for flow in root.iter(_b("messageFlow")):
        a.add("Message flows between pools are not run by the engine; a hand-over between agencies is modelled as lanes and sequence flows in one process.", flow, filename, severity="warning")


def _lane_index(process: Any) -> dict[str, Any]:
    """Map each flow node id to its innermost lane element."""
    index: dict[str, Any] = {}
    for lane in process.iter(_b("lane")):
        for ref in lane.findall(_b("flowNodeRef")):
            node_id = (ref.text or "").strip()
            current = index.get(node_id)
            # A child lane is deeper in the tree: prefer it.
            if current is None or _depth(lane) > _depth(current):
                index[node_id] = lane
    return index


def _nesting(element: Any, top: Any) -> int:
    """How many sub-processes enclose ``element`` (itself included) below ``top``."""
    depth = 0
    while element is not None and element is not top:
        if element.tag == _b("subProcess"):
            depth += 1
        element = element.getparent()
    return depth


def _depth(element: Any) -> int:
    depth = 0
    while element is not None:
        depth += 1
        element = element.getparent()
    return depth


def _lane_properties(lane: Any) -> dict[str, str]:
    """Properties of ``lane`` with those of enclosing lanes as defaults."""
    chain = []
    node = lane
    while node is not None:
        if node.tag == _b("lane"):
            chain.append(node)
        node = node.getparent()
    merged: dict[str, str] = {}
    for item in reversed(chain):
        merged.update(extension_properties(item))
    return merged


def _check_process(a: _Analysis, process: Any, filename: str, steps: dict[str, StepDefinition]) -> None:
    pid = process.get("id")
    executable = process.get("isExecutable") == "true"
    lanes = _lane_index(process)
    flow_nodes = [el for el in process.iter() if isinstance(el.tag, str) and el.tag in SUPPORTED_FLOW_NODES | HUMAN_TASKS]
    if len(flow_nodes) > MAX_FLOW_NODES:
        a.add(
            f"Process '{pid}' has {len(flow_nodes)} flow elements; the limit is {MAX_FLOW_NODES}. Split it into called sub-processes (call activities).",
            process,
            filename,
        )
        return
    deepest = max((_nesting(el, process) for el in process.iter(_b("subProcess"))), default=0)
    if deepest > MAX_SUBPROCESS_DEPTH:
        a.add(
            f"Process '{pid}' nests sub-processes {deepest} deep; the limit is {MAX_SUBPROCESS_DEPTH}. Flatten it or use called sub-processes (call activities).",
            process,
            filename,
        )
        return
    if not executable:
        a.add(
            f"Process '{pid}' is not marked executable (isExecutable=\"true\"); tick 'Executable' in the modeller.",
            process,
            filename,
            severity="error",
        )
    for container in [process, *process.iter(_b("subProcess"))]:
        _check_start_end(a, container, filename)
    for element in process.iter():
        if not isinstance(element.tag, str) or element is process:
            continue
        tag = element.tag
        if not tag.startswith(f"{{{BPMN_NS}}}"):
            continue  # extension content, read where needed
        local = etree.QName(element).localname
        parent_local = etree.QName(element.getparent()).localname if element.getparent() is not None else ""
        if parent_local == "extensionElements":
            continue
        if local.endswith("EventDefinition"):
            what = _EVENT_DEFINITIONS.get(local, local)
            a.add(f"{what[0].upper()}{what[1:]} are not supported by the engine (element <{local}>).", element.getparent(), filename, line=element.sourceline)
            if local == "timerEventDefinition":
                for expr in element:
                    if isinstance(expr.tag, str) and (expr.text or "").strip():
                        _check_expression(a, expr.text, element.getparent(), filename, "timer expression", line=expr.sourceline)
            continue
        if tag in SUPPORTED_FLOW_NODES or tag in NEUTRAL_ELEMENTS:
            if tag == _b("subProcess") and element.get("triggeredByEvent") == "true":
                a.add("Event sub-processes are not supported by the engine.", element, filename)
            continue
        if parent_local in ("conditionExpression", "script", "textAnnotation", "documentation", "text"):
            continue
        if local in ("multiInstanceLoopCharacteristics", "standardLoopCharacteristics"):
            a.add("Loops and multi-instance markers on activities are not supported; model the repetition with a gateway.", element.getparent(), filename, line=element.sourceline)
            continue
        if local in ("dataInputAssociation", "dataOutputAssociation", "sourceRef", "targetRef", "ioSpecification", "dataInput", "dataOutput", "inputSet", "outputSet", "dataInputRefs", "dataOutputRefs", "assignment", "from", "to", "transformation", "categoryValue"):
            continue  # data wiring, harmless
        a.add(f"<{local}> is not supported by the engine; it would not be run.", element, filename)

    for element in process.iter(_b("sequenceFlow")):
        condition = element.find(_b("conditionExpression"))
        if condition is not None and (condition.text or "").strip():
            _check_expression(a, condition.text, element, filename, "condition", line=condition.sourceline)
    for element in process.iter(_b("scriptTask")):
        script = element.find(_b("script"))
        text = (script.text or "") if script is not None else ""
        if not text.strip():
            a.add("Script task has no script.", element, filename)
        else:
            for problem in expressions.check_script(text):
                a.add(f"Script not allowed: {problem.message}", element, filename, line=_line(script, problem.line))
    for element in process.iter(_b("exclusiveGateway"), _b("inclusiveGateway")):
        outgoing = _outgoing(process, element.get("id"))
        if len(outgoing) > 1:
            default = element.get("default")
            for flow in outgoing:
                if flow.get("id") != default and flow.find(_b("conditionExpression")) is None:
                    a.add("This flow leaves a decision gateway without a condition and is not the gateway's default flow; add a condition or mark it default.", flow, filename)
    roleless_lanes_reported: set[str] = set()
    for element in process.iter(*HUMAN_TASKS):
        step_id = element.get("id")
        props = extension_properties(element)
        lane = lanes.get(step_id)
        lane_props = _lane_properties(lane) if lane is not None else {}
        role = props.get("role") or lane_props.get("role")
        agency = props.get("agency") or lane_props.get("agency")
        name = element.get("name") or step_id
        if lane is None and "role" not in props:
            a.add(f"Step '{name}' is in no lane; put it in the lane of the role that does it.", element, filename)
        elif not role and lane.get("id") not in roleless_lanes_reported:
            roleless_lanes_reported.add(lane.get("id"))
            lane_name = lane.get("name") or lane.get("id")
            a.add(f"Lane '{lane_name}' has no role; add the extension property 'role' (e.g. officer, leader, receptionist) to the lane.", lane, filename)
        allotment = None
        if "allotment" not in props:
            a.add(f"Step '{name}' has no allotment; add the extension property 'allotment' (e.g. '3 working days').", element, filename)
        else:
            try:
                allotment = parse_duration(props["allotment"])
            except DurationError as err:
                a.add(f"Allotment of step '{name}': {err}", element, filename)
        allotment_online = None
        if props.get("allotment_online"):
            try:
                allotment_online = parse_duration(props["allotment_online"])
            except DurationError as err:
                a.add(f"Online allotment of step '{name}': {err}", element, filename)
        steps[step_id] = StepDefinition(
            step_id=step_id,
            name=name,
            process_id=pid,
            lane_id=lane.get("id") if lane is not None else None,
            lane_name=(lane.get("name") or lane.get("id")) if lane is not None else None,
            role=role,
            agency=agency,
            allotment=allotment,
            form=_form_fields(element),
            allotment_online=allotment_online,
            signed_result=props.get("signed_result", "").strip().casefold() in ("true", "1", "yes", "có"),
        )
    for element in process.iter(_b("callActivity")):
        called = element.get("calledElement")
        if not called:
            a.add("Call activity names no called process (calledElement).", element, filename)
        elif called not in a.processes and not _process_in_files(a, called):
            a.add(f"Call activity calls process '{called}', which is not among the uploaded files; upload it with this one.", element, filename)


def _process_in_files(a: _Analysis, process_id: str) -> bool:
    return any(root.find(f"{_b('process')}[@id='{process_id}']") is not None for root in a.roots.values() if "'" not in process_id)


def _line(base: Any, offset: int | None) -> int | None:
    if base is None or base.sourceline is None:
        return None
    return base.sourceline + (offset - 1 if offset else 0)


def _check_expression(a: _Analysis, text: str, element: Any, filename: str, what: str, line: int | None) -> None:
    for message in dict.fromkeys(problem.message for problem in expressions.check_expression(text.strip())):
        a.add(f"The {what} '{_short(text)}' is not allowed: {message}", element, filename, line=line)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "…"


def _children_of(container: Any, tag: str) -> list[Any]:
    return [el for el in container if el.tag == tag]


def _outgoing(container: Any, node_id: str | None) -> list[Any]:
    parent = container
    return [flow for flow in parent.iter(_b("sequenceFlow")) if flow.get("sourceRef") == node_id]


def _check_start_end(a: _Analysis, container: Any, filename: str) -> None:
    kind = "Process" if container.tag == _b("process") else "Sub-process"
    starts = _children_of(container, _b("startEvent"))
    ends = _children_of(container, _b("endEvent"))
    if not starts:
        a.add(f"{kind} '{container.get('id')}' has no start event.", container, filename)
    if not ends:
        a.add(f"{kind} '{container.get('id')}' has no end event.", container, filename)
    if len(starts) > 1:
        a.add(f"{kind} '{container.get('id')}' has {len(starts)} start events; the engine needs exactly one.", starts[1], filename)


def _main_process(a: _Analysis) -> tuple[Any, str] | None:
    called = {el.get("calledElement") for root in a.roots.values() for el in root.iter(_b("callActivity"))}
    with_code = [(pid, item) for pid, item in a.processes.items() if extension_properties(item[0]).get("code")]
    top = [(pid, item) for pid, item in with_code if pid not in called]
    if not with_code:
        candidates = [item for pid, item in a.processes.items() if pid not in called] or list(a.processes.values())
        element, filename = candidates[0] if candidates else (None, None)
        if element is not None:
            a.add(
                "No procedure code: add the extension property 'code' (mã TTHC, e.g. 1.001193) to the main process.",
                element,
                filename,
            )
        else:
            a.add("The files contain no process.")
        return None
    if len(top) > 1:
        for pid, (element, filename) in top[1:]:
            a.add(f"Process '{pid}' also carries a procedure code; deploy one procedure at a time (the others may be called sub-processes without a code).", element, filename)
        return None
    return (top or with_code)[0][1]


def _procedure_metadata(a: _Analysis, main: tuple[Any, str], steps: dict[str, StepDefinition]) -> ProcedureDefinition | None:
    process, filename = main
    props = extension_properties(process)
    name = props.get("name") or process.get("name")
    if not name:
        a.add("The procedure has no name: name the process or add the extension property 'name'.", process, filename)
    level = props.get("level")
    if level and level.lower() not in _LEVELS:
        a.add(f"Level '{level}' is unknown; use commune, district, province or ministry (xã, huyện, tỉnh, bộ).", process, filename)
    deadline = None
    if "deadline" not in props:
        a.add("No legal deadline: add the extension property 'deadline' (e.g. '15 working days' or 'same day').", process, filename)
    else:
        try:
            deadline = parse_duration(props["deadline"])
        except DurationError as err:
            a.add(f"Deadline: {err}", process, filename)
    deadline_online = None
    if props.get("deadline_online"):
        try:
            deadline_online = parse_duration(props["deadline_online"])
        except DurationError as err:
            a.add(f"Online deadline: {err}", process, filename)
    cutoff = props.get("cutoff") or None
    if cutoff is not None:
        parts = cutoff.split(":")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or not (0 <= int(parts[0]) < 24 and 0 <= int(parts[1]) < 60):
            a.add(f"Cut-off '{cutoff}' is not a time of day such as 15:00.", process, filename)
            cutoff = None
    ladder = None
    if props.get("escalation"):
        try:
            ladder = parse_ladder(props["escalation"])
        except ValueError as err:
            a.add(f"Escalation: {err}", process, filename)
    if deadline is None or not name or (props.get("escalation") and ladder is None):
        return None
    reachable = _reachable_processes(a, process.get("id"))
    return ProcedureDefinition(
        code=props["code"],
        name=name,
        field=props.get("field") or None,
        level=level or None,
        deadline=deadline,
        cutoff=cutoff,
        process_id=process.get("id"),
        steps={k: v for k, v in steps.items() if v.process_id in reachable},
        financial_obligation=props.get("financial_obligation", "").strip().lower() in ("true", "yes", "có", "1"),
        escalation=ladder,
        content_hash=content_hash(a.files),
        deadline_online=deadline_online,
        fee_properties={"fees": props.get("fees") or None, "fees_before_processing": props.get("fees_before_processing") or None},
    )


ESCALATION_LEVELS = ("warning", "head_of_unit", "leader", "supervisor")


def parse_ladder(text: str) -> list[tuple[str, float]]:
    """``"warning=-4h, head_of_unit=0h, leader=8h, supervisor=2d"`` → levels and working-hour offsets."""
    ladder = []
    for part in text.split(","):
        if not part.strip():
            continue
        level, _, offset = part.partition("=")
        level, offset = level.strip(), offset.strip().lower()
        if level not in ESCALATION_LEVELS:
            raise ValueError(f"'{level}' is not one of {', '.join(ESCALATION_LEVELS)}.")
        unit = 8.0 if offset.endswith("d") else 1.0
        try:
            hours = float(offset.rstrip("dh") or "x") * unit
        except ValueError:
            raise ValueError(f"'{offset}' is not an offset such as -4h, 0h, 8h or 2d.") from None
        ladder.append((level, hours))
    if not ladder:
        raise ValueError("the ladder is empty.")
    return ladder


def procedure_bundles(files: Mapping[str, bytes]) -> list[dict[str, bytes]]:
    """Group a folder of BPMN files into deployments: each file whose process
    carries a procedure ``code``, with the files of the processes it calls
    (transitively). Files only ever called are not deployed on their own; files
    that cannot be read form a bundle of their own, so that their problems show.
    """
    defines: dict[str, str] = {}
    calls: dict[str, set[str]] = {}
    main: list[str] = []
    unreadable: list[str] = []
    for name, content in files.items():
        root, problems = parse_xml(content, name)
        if root is None:
            unreadable.append(name)
            continue
        calls[name] = {c.get("calledElement") for c in root.iter(_b("callActivity")) if c.get("calledElement")}
        for process in root.iter(_b("process")):
            defines[process.get("id")] = name
            if extension_properties(process).get("code"):
                main.append(name)
    bundles = []
    for name in dict.fromkeys(main):
        members, todo = {name}, [name]
        while todo:
            for called in calls.get(todo.pop(), ()):
                owner = defines.get(called)
                if owner is not None and owner not in members:
                    members.add(owner)
                    todo.append(owner)
        bundles.append({member: files[member] for member in sorted(members)})
    bundles.extend({name: files[name]} for name in unreadable)
    return bundles


def _reachable_processes(a: _Analysis, start: str) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        pid = todo.pop()
        item = a.processes.get(pid)
        if item is None:
            continue
        for call in item[0].iter(_b("callActivity")):
            called = call.get("calledElement")
            if called and called not in seen:
                seen.add(called)
                todo.append(called)
    return seen


def _longest_path_hours(
    a: _Analysis, container: Any, memo: dict[str, Decimal], stack: tuple[str, ...] = (), online: bool = False
) -> Decimal:
    """Largest sum of allotments (working hours) along any path, loops cut."""
    nodes = {el.get("id"): el for el in container if isinstance(el.tag, str) and (el.tag in SUPPORTED_FLOW_NODES or el.tag in HUMAN_TASKS)}
    edges: dict[str, list[str]] = defaultdict(list)
    for flow in _children_of(container, _b("sequenceFlow")):
        src, dst = flow.get("sourceRef"), flow.get("targetRef")
        if src in nodes and dst in nodes:
            edges[src].append(dst)
    # Drop back edges found by an iterative depth-first search from the starts.
    order: list[str] = []
    state: dict[str, int] = {}
    dag: dict[str, list[str]] = defaultdict(list)
    starts = [nid for nid, el in nodes.items() if el.tag == _b("startEvent")] or list(nodes)
    for start in starts:
        if start in state:
            continue
        state[start] = 1
        work = [(start, iter(edges[start]))]
        while work:
            nid, it = work[-1]
            nxt = next(it, None)
            if nxt is None:
                state[nid] = 2
                order.append(nid)
                work.pop()
                continue
            if state.get(nxt) == 1:
                continue  # back edge: a loop
            dag[nid].append(nxt)
            if nxt not in state:
                state[nxt] = 1
                work.append((nxt, iter(edges[nxt])))
    result = Decimal(0)
    best_in: dict[str, Decimal] = defaultdict(Decimal)
    for nid in reversed(order):  # reverse post-order of a DAG is a topological order
        total = best_in[nid] + _node_hours(a, nodes[nid], memo, stack, online)
        result = max(result, total)
        for target in dag[nid]:
            best_in[target] = max(best_in[target], total)
    return result


def _node_hours(a: _Analysis, el: Any, memo: dict[str, Decimal], stack: tuple[str, ...], online: bool = False) -> Decimal:
    if el.tag in HUMAN_TASKS:
        props = extension_properties(el)
        allotment = (online and props.get("allotment_online")) or props.get("allotment")
        try:
            return parse_duration(allotment).working_hours if allotment else Decimal(0)
        except DurationError:
            return Decimal(0)
    if el.tag == _b("subProcess"):
        return _longest_path_hours(a, el, memo, stack, online)
    if el.tag == _b("callActivity"):
        called = el.get("calledElement")
        if not called or called in stack or called not in a.processes:
            return Decimal(0)
        if called not in memo:
            memo[called] = _longest_path_hours(a, a.processes[called][0], memo, stack + (called,), online)
        return memo[called]
    return Decimal(0)


def _check_paths(a: _Analysis, process: Any, deadline: Duration, deadline_online: Duration | None = None) -> None:
    """Allotments along the longest path fit the deadline; for online dossiers, with their own allotments."""
    for online, limit_of in ((False, deadline), (True, deadline_online or deadline)):
        total = _longest_path_hours(a, process, {}, (process.get("id"),), online)
        limit = limit_of.working_hours
        if total > limit:
            which = "online allotments" if online else "Step allotments"
            a.add(
                f"{which[0].upper()}{which[1:]} along the longest path add up to {_fmt_hours(total)}, more than the legal deadline"
                f"{' for online dossiers' if online else ''} of {limit_of} ({_fmt_hours(limit)}); shorten the allotments.",
                process,
                a.processes[process.get("id")][1],
            )
            return


def _fmt_hours(hours: Decimal) -> str:
    days, rest = divmod(hours, 8)
    text = f"{format(hours.normalize(), 'f')} working hours"
    if rest == 0:
        text = f"{format(days.normalize(), 'f')} working days"
    return text


def _parse_with_spiff(a: _Analysis, process_id: str) -> Any:
    from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException

    from .runtime import ProcedureSpec

    try:
        return ProcedureSpec.from_trees(a.roots, process_id)
    except ValidationException as err:
        a.add(
            f"The workflow engine cannot read the diagram: {err}",
            element_id=getattr(err, "id", None) or None,
            line=getattr(err, "line_number", None) or None,
            filename=getattr(err, "file_name", None) or None,
        )
    except RecursionError:
        a.add("The diagram is too deeply nested or too long for the engine; split it into called sub-processes.")
    except Exception as err:  # SpiffWorkflow raises many types on odd input; none may escape
        a.add(f"The workflow engine cannot read the diagram: {type(err).__name__}: {err}")
    return None
