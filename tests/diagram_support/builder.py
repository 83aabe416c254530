"""Small BPMN files with a diagram layout, written out for the rendering tests."""

from __future__ import annotations

HEADER = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"'
    ' xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI"'
    ' xmlns:dc="http://www.omg.org/spec/DD/20100524/DC"'
    ' xmlns:di="http://www.omg.org/spec/DD/20100524/DI" id="defs" targetNamespace="http://example.org/t">'
)


def shape(element_id: str, x: float, y: float, w: float, h: float, attrs: str = "", label: tuple[float, float, float, float] | None = None) -> str:
    """A BPMNShape; ``label`` gives the BPMNLabel bounds (x, y, w, h)."""
    inner = f'<dc:Bounds x="{x}" y="{y}" width="{w}" height="{h}"/>'
    if label:
        lx, ly, lw, lh = label
        inner += f'<bpmndi:BPMNLabel><dc:Bounds x="{lx}" y="{ly}" width="{lw}" height="{lh}"/></bpmndi:BPMNLabel>'
    return f'<bpmndi:BPMNShape id="{element_id}_di" bpmnElement="{element_id}" {attrs}>{inner}</bpmndi:BPMNShape>'


def edge(element_id: str, *points: tuple[float, float]) -> str:
    waypoints = "".join(f'<di:waypoint x="{x}" y="{y}"/>' for x, y in points)
    return f'<bpmndi:BPMNEdge id="{element_id}_di" bpmnElement="{element_id}">{waypoints}</bpmndi:BPMNEdge>'


def document(process: str, di: str, *, process_id: str = "P", collaboration: str = "", plane: str | None = None, extra: str = "") -> bytes:
    """A definitions element with one process and one diagram whose plane shows ``plane`` (default: the process)."""
    plane_ref = plane or process_id
    return (
        f'{HEADER}{collaboration}<bpmn:process id="{process_id}" isExecutable="false">{process}</bpmn:process>{extra}'
        f'<bpmndi:BPMNDiagram id="D_{plane_ref}"><bpmndi:BPMNPlane id="PL_{plane_ref}" bpmnElement="{plane_ref}">{di}</bpmndi:BPMNPlane></bpmndi:BPMNDiagram>'
        "</bpmn:definitions>"
    ).encode("utf-8")


def chain(count: int) -> bytes:
    """A start event, ``count`` user tasks in a row and an end event, joined by sequence flows."""
    ids = ["s"] + [f"t{i}" for i in range(count)] + ["e"]
    process, di = [], []
    for i, node in enumerate(ids):
        x = 100 + i * 150
        if node == "s":
            process.append('<bpmn:startEvent id="s" name="Bắt đầu"/>')
            di.append(shape("s", x + 32, 122, 36, 36))
        elif node == "e":
            process.append('<bpmn:endEvent id="e" name="Kết thúc"/>')
            di.append(shape("e", x + 32, 122, 36, 36))
        else:
            process.append(f'<bpmn:userTask id="{node}" name="Bước xử lý hồ sơ số {i}"/>')
            di.append(shape(node, x, 100, 100, 80))
    for i, (a, b) in enumerate(zip(ids, ids[1:])):
        process.append(f'<bpmn:sequenceFlow id="f{i}" sourceRef="{a}" targetRef="{b}"/>')
        x0 = 100 + i * 150 + (68 if a == "s" else 100)
        x1 = 100 + (i + 1) * 150 + (32 if b == "e" else 0)
        di.append(edge(f"f{i}", (x0, 140), (x1, 140)))
    return document("".join(process), "".join(di))


TASK_TYPES = ["task", "userTask", "manualTask", "serviceTask", "scriptTask", "sendTask", "receiveTask", "businessRuleTask"]
EVENT_TRIGGERS = ["message", "timer", "signal", "error", "escalation", "conditional", "link", "compensate", "terminate", "cancel"]
EVENT_KINDS = ["startEvent", "intermediateCatchEvent", "intermediateThrowEvent", "endEvent", "boundaryEvent"]


def gallery() -> bytes:
    """One of every kind of shape the renderer knows, laid out in rows."""
    process, di = [], []
    for i, tag in enumerate(TASK_TYPES):
        process.append(f'<bpmn:{tag} id="{tag}" name="{tag}"/>')
        di.append(shape(tag, 20 + i * 120, 20, 100, 80))
    activities = [
        ("subProcess", "collapsed", "", "", ""),
        ("transaction", "transaction", "", "", 'isExpanded="true"'),
        ("adHocSubProcess", "adhoc", "", "", ""),
        ("subProcess", "event_sub", 'triggeredByEvent="true"', "", 'isExpanded="true"'),
        ("callActivity", "call", "", "", ""),
        ("task", "loop", "", "<bpmn:standardLoopCharacteristics/>", ""),
        ("task", "parallel_mi", "", "<bpmn:multiInstanceLoopCharacteristics/>", ""),
        ("task", "sequential_mi", "", '<bpmn:multiInstanceLoopCharacteristics isSequential="true"/>', ""),
        ("task", "compensation", 'isForCompensation="true"', "", ""),
    ]
    for i, (tag, element_id, attrs, inner, di_attrs) in enumerate(activities):
        process.append(f'<bpmn:{tag} id="{element_id}" name="{element_id}" {attrs}>{inner}</bpmn:{tag}>')
        di.append(shape(element_id, 20 + i * 120, 140, 100, 80, di_attrs))
    for row, tag in enumerate(EVENT_KINDS):
        extra = 'attachedToRef="task" cancelActivity="false"' if tag == "boundaryEvent" else ""
        for i, trigger in enumerate(EVENT_TRIGGERS):
            element_id = f"{tag}_{trigger}"
            process.append(f'<bpmn:{tag} id="{element_id}" {extra}><bpmn:{trigger}EventDefinition/></bpmn:{tag}>')
            di.append(shape(element_id, 30 + i * 70, 260 + row * 60, 36, 36))
        for i, (suffix, attrs) in enumerate((("multiple", ""), ("parallel_multiple", 'parallelMultiple="true"'))):
            element_id = f"{tag}_{suffix}"
            process.append(
                f'<bpmn:{tag} id="{element_id}" {attrs} {extra}><bpmn:messageEventDefinition/><bpmn:timerEventDefinition/></bpmn:{tag}>'
            )
            di.append(shape(element_id, 30 + (10 + i) * 70, 260 + row * 60, 36, 36))
    gateways = [
        ("exclusiveGateway", "exclusive", "", 'isMarkerVisible="true"'),
        ("exclusiveGateway", "exclusive_plain", "", ""),
        ("parallelGateway", "parallel", "", ""),
        ("inclusiveGateway", "inclusive", "", ""),
        ("complexGateway", "complex", "", ""),
        ("eventBasedGateway", "event_based", "", ""),
        ("eventBasedGateway", "parallel_event_based", 'instantiate="true" eventGatewayType="Parallel"', ""),
    ]
    for i, (tag, element_id, attrs, di_attrs) in enumerate(gateways):
        process.append(f'<bpmn:{tag} id="{element_id}" name="{element_id}" {attrs}/>')
        di.append(shape(element_id, 30 + i * 90, 580, 50, 50, di_attrs))
    process.append(
        '<bpmn:dataObject id="do" isCollection="true"/>'
        '<bpmn:dataObjectReference id="data_object" name="Hồ sơ" dataObjectRef="do"><bpmn:dataState name="đã ký"/></bpmn:dataObjectReference>'
        '<bpmn:ioSpecification><bpmn:dataInput id="data_input" name="Vào"/><bpmn:dataOutput id="data_output" name="Ra"/>'
        "<bpmn:inputSet/><bpmn:outputSet/></bpmn:ioSpecification>"
        '<bpmn:dataStoreReference id="data_store" name="CSDL"/>'
        '<bpmn:textAnnotation id="note"><bpmn:text>Ghi chú về bước này</bpmn:text></bpmn:textAnnotation>'
        '<bpmn:association id="note_link" sourceRef="note" targetRef="data_store" associationDirection="One"/>'
    )
    di.append(shape("data_object", 700, 580, 36, 50))
    di.append(shape("data_input", 760, 580, 36, 50))
    di.append(shape("data_output", 820, 580, 36, 50))
    di.append(shape("data_store", 880, 580, 50, 50))
    di.append(shape("note", 960, 580, 120, 40))
    di.append(edge("note_link", (960, 600), (930, 605)))
    return document("".join(process), "".join(di))
