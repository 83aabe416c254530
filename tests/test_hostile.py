"""Hostile diagrams are rejected cleanly, in bounded time and memory, and run nothing.

The small files live in ``tests/hostile/`` (see its README); the large ones
(an oversized file, a 5,000-step chain, deep nesting) are made here. Every file
is validated in a child process under a memory limit and a time-out, so a
parser that blows up shows as a failed test, not a dead test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HOSTILE = Path(__file__).resolve().parent / "hostile"
ROOT = HOSTILE.parents[1]
MEMORY_LIMIT = 1024 * 1024 * 1024  # 1 GiB of address space for the child
TIME_LIMIT = 60  # seconds for the whole corpus

#: File → a fragment expected in one of its error messages, and the element id it names (None: the file as a whole).
EXPECTED: dict[str, tuple[str, str | None]] = {
    "malformed.bpmn": ("not well-formed", None),
    "binary.bpmn": ("not well-formed", None),
    "not-bpmn.bpmn": ("root element", None),
    "xxe-local-file.bpmn": ("DOCTYPE", None),
    "billion-laughs.bpmn": ("DOCTYPE", None),
    "external-dtd.bpmn": ("DOCTYPE", None),
    "parameter-entity.bpmn": ("DOCTYPE", None),
    "xinclude.bpmn": ("XInclude", None),
    "condition-import.bpmn": ("not allowed", "f_yes"),
    "condition-class-walk.bpmn": ("not allowed", "f_yes"),
    "condition-huge-power.bpmn": ("not allowed", "f_yes"),
    "condition-endless.bpmn": ("not allowed", "f_yes"),
    "condition-lambda.bpmn": ("not allowed", "f_yes"),
    "condition-format-leak.bpmn": ("not allowed", "f_yes"),
    "script-task.bpmn": ("not allowed", "evil_script"),
    "timer-code.bpmn": ("not allowed", "evil_timer"),
    "unsupported-elements.bpmn": ("not supported", "complex_gw"),
    "lane-without-role.bpmn": ("no role", "lane_a"),
    "missing-allotment.bpmn": ("no allotment", "t1"),
    "no-start-no-end.bpmn": ("no start event", "Empty"),
    # made by _generated()
    "oversized.bpmn": ("limit", None),
    "chain-5000.bpmn": ("limit is", "Chain"),
    "deep-elements.bpmn": ("not well-formed", None),
    "deep-subprocesses.bpmn": ("nests sub-processes", "Nested"),
}

_NS = 'xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" targetNamespace="http://motcua.vn/hostile"'


def _generated(directory: Path) -> None:
    """Write the large hostile files into ``directory``."""
    directory.joinpath("oversized.bpmn").write_text(
        f'<?xml version="1.0"?><bpmn:definitions {_NS}><!--{"x" * 3_000_000}--></bpmn:definitions>', encoding="utf-8"
    )
    steps = 5000
    chain = ['<bpmn:startEvent id="s"/>']
    chain += [f'<bpmn:userTask id="t{i}"/>' for i in range(steps)]
    chain += ['<bpmn:endEvent id="e"/>', '<bpmn:sequenceFlow id="f_s" sourceRef="s" targetRef="t0"/>']
    chain += [f'<bpmn:sequenceFlow id="f{i}" sourceRef="t{i}" targetRef="t{i + 1}"/>' for i in range(steps - 1)]
    chain += [f'<bpmn:sequenceFlow id="f_e" sourceRef="t{steps - 1}" targetRef="e"/>']
    directory.joinpath("chain-5000.bpmn").write_text(
        f'<?xml version="1.0"?><bpmn:definitions {_NS}><bpmn:process id="Chain" isExecutable="true">{"".join(chain)}'
        "</bpmn:process></bpmn:definitions>",
        encoding="utf-8",
    )
    depth = 20_000
    directory.joinpath("deep-elements.bpmn").write_text(
        f'<?xml version="1.0"?><bpmn:definitions {_NS}><bpmn:process id="Deep">'
        + "<bpmn:documentation>" * depth + "</bpmn:documentation>" * depth
        + "</bpmn:process></bpmn:definitions>",
        encoding="utf-8",
    )
    nested = 95
    opening = "".join(f'<bpmn:subProcess id="sp{i}"><bpmn:startEvent id="st{i}"/>' for i in range(nested))
    closing = "".join(f'<bpmn:endEvent id="en{i}"/></bpmn:subProcess>' for i in reversed(range(nested)))
    directory.joinpath("deep-subprocesses.bpmn").write_text(
        f'<?xml version="1.0"?><bpmn:definitions {_NS} xmlns:camunda="http://camunda.org/schema/1.0/bpmn">'
        '<bpmn:process id="Nested" name="Lồng nhau" isExecutable="true"><bpmn:extensionElements><camunda:properties>'
        '<camunda:property name="code" value="9.999002"/><camunda:property name="deadline" value="5 working days"/>'
        f'</camunda:properties></bpmn:extensionElements><bpmn:startEvent id="s"/>{opening}{closing}<bpmn:endEvent id="e"/>'
        "</bpmn:process></bpmn:definitions>",
        encoding="utf-8",
    )


_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from pathlib import Path
    from engine import services
    out = {{}}
    for path in sys.argv[1:]:
        started = time.perf_counter()
        problems = services.validate({{Path(path).name: Path(path).read_bytes()}})
        out[Path(path).name] = {{
            "seconds": time.perf_counter() - started,
            "errors": [{{"message": p.message, "element_id": p.element_id, "line": p.line}}
                       for p in problems if p.severity == "error"],
        }}
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Validate every hostile file in one child process with its working directory in a scratch folder."""
    scratch = tmp_path_factory.mktemp("hostile")
    _generated(scratch)
    files = sorted(HOSTILE.glob("*.bpmn")) + sorted(scratch.glob("*.bpmn"))
    result = subprocess.run(
        [sys.executable, "-c", _CHILD.format(limit=MEMORY_LIMIT), *map(str, files)],
        cwd=scratch, capture_output=True, text=True, timeout=TIME_LIMIT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    found["_scratch"] = {"path": str(scratch)}
    return found


def test_every_file_of_the_corpus_is_checked() -> None:
    on_disk = {path.name for path in HOSTILE.glob("*.bpmn")}
    assert on_disk <= set(EXPECTED)
    assert len(on_disk) >= 20


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_file_is_rejected_with_a_precise_problem(verdicts: dict[str, dict], name: str) -> None:
    verdict = verdicts[name]
    assert verdict["errors"], f"{name} was accepted"
    fragment, element_id = EXPECTED[name]
    matching = [e for e in verdict["errors"] if fragment.lower() in e["message"].lower()]
    assert matching, verdict["errors"]
    if element_id is not None:
        assert element_id in {e["element_id"] for e in verdict["errors"]}, verdict["errors"]
    messages = [(e["element_id"], e["message"]) for e in verdict["errors"]]
    assert len(messages) == len(set(messages)), "the same problem is reported twice"
    assert verdict["seconds"] < 10  # bounded: no exponential parse or evaluation


def test_nothing_ran_and_nothing_leaked(verdicts: dict[str, dict]) -> None:
    scratch = Path(verdicts["_scratch"]["path"])
    assert not (scratch / "SENTINEL").exists()  # no condition, script or timer was executed
    messages = " ".join(e["message"] for v in verdicts.values() for e in v.get("errors", []))
    assert "root:" not in messages  # no /etc/passwd content came back through an entity or include
    assert Path("/etc/hostname").read_text(encoding="utf-8").strip() not in messages


def test_the_template_the_corpus_was_cut_from_is_valid() -> None:
    """The condition files differ from a valid diagram only by their hostile part."""
    from engine import services

    valid = (HOSTILE / "condition-import.bpmn").read_text(encoding="utf-8").replace(
        "__import__('os').system('touch SENTINEL') == 0", "hop_le == True"
    )
    assert [p for p in services.validate({"ok.bpmn": valid.encode()}) if p.severity == "error"] == []
