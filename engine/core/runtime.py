"""Running a procedure's workflow with SpiffWorkflow, without any storage.

The persisted engine keeps three things apart:

* the *spec* of a procedure version (parsed once, cached in memory, stored once
  per version as JSON);
* the *state* of one dossier's workflow: :func:`dump_state` gives a JSON-ready
  dict **without** the spec, pruned of finished work so that it does not grow
  with the dossier's history (a dossier sent back for rework fifty times costs
  what it cost the first time);
* the rows the database indexes (open human tasks, due dates), computed from the
  workflow by :func:`human_tasks`.

Example::

    definition, problems = bpmn.analyse({"khai-sinh.bpmn": xml_bytes})
    spec = definition.spec
    wf = start_workflow(spec, {"applicant": "Nguyễn Văn A"})
    [step] = human_tasks(wf)
    complete_task(wf, step.task_id, {"approved": True})
    state = dump_state(wf)                      # store it
    wf = load_state(spec, state)                # later, maybe in another process
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping
from uuid import UUID

from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.serializer.default.workflow import (
    BpmnWorkflowConverter,
    WorkflowConverter,
)
from SpiffWorkflow.bpmn.serializer.helpers.encoder import create_encoder
from SpiffWorkflow.bpmn.specs.mixins.subworkflow_task import SubWorkflowTask
from SpiffWorkflow.bpmn.specs.mixins.unstructured_join import UnstructuredJoin
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.camunda.parser import CamundaParser
from SpiffWorkflow.camunda.serializer import DEFAULT_CONFIG as CAMUNDA_SERIALIZER_CONFIG
from SpiffWorkflow.util.task import TaskState

from .expressions import SafeScriptEngine

__all__ = [
    "EngineError",
    "HumanTask",
    "ProcedureSpec",
    "complete_task",
    "dump_state",
    "human_tasks",
    "load_state",
    "previous_human_task",
    "prune_finished",
    "reset_to",
    "start_workflow",
]



class _SpecFreeWorkflowConverter(BpmnWorkflowConverter):
    """Serializes a workflow without its spec: the spec is stored once per version."""

    def to_dict(self, workflow: BpmnWorkflow) -> dict[str, Any]:
        dct = WorkflowConverter.to_dict(self, workflow)
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct


_CONFIG = dict(CAMUNDA_SERIALIZER_CONFIG)
_CONFIG[BpmnWorkflow] = _SpecFreeWorkflowConverter
_REGISTRY = BpmnWorkflowSerializer.configure(_CONFIG)
_SERIALIZER = BpmnWorkflowSerializer(_REGISTRY)
_ENCODER = create_encoder(_REGISTRY)
_SCRIPT_ENGINE = SafeScriptEngine()

#: Finished states: nothing more will happen to a task in one of them.
_FINISHED = TaskState.COMPLETED | TaskState.CANCELLED | TaskState.ERROR


class EngineError(Exception):
    """A request the workflow cannot honour (unknown task, task not ready, …)."""


@dataclass(frozen=True)
class HumanTask:
    """A ready user or manual task, as the database stores it."""

    task_id: str
    step_id: str
    step_name: str
    lane: str | None
    process_id: str
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ProcedureSpec:
    """The parsed, executable form of one procedure version.

    Build it once per version (parsing is the expensive part) and share it: a
    spec is never modified while workflows run.
    """

    process_id: str
    spec: Any
    subprocess_specs: dict[str, Any]

    @classmethod
    def from_trees(cls, trees: Mapping[str, Any], process_id: str) -> "ProcedureSpec":
        """Parse BPMN documents already read safely (name → lxml root) for ``process_id``.

        Use :func:`engine.core.bpmn.analyse` for untrusted files: it validates
        them and calls this.
        """
        parser = CamundaParser()
        for name, root in trees.items():
            parser.add_bpmn_xml(root, filename=name)
        return cls(process_id, parser.get_spec(process_id), parser.get_subprocess_specs(process_id))

    def to_json(self) -> str:
        """The spec as JSON, to store once per procedure version."""
        return json.dumps(
            {
                "process_id": self.process_id,
                "spec": _REGISTRY.convert(self.spec),
                "subprocess_specs": {k: _REGISTRY.convert(v) for k, v in self.subprocess_specs.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "ProcedureSpec":
        """Restore a spec stored with :meth:`to_json`."""
        dct = json.loads(text)
        return cls(
            dct["process_id"],
            _REGISTRY.restore(dct["spec"]),
            {k: _REGISTRY.restore(v) for k, v in dct["subprocess_specs"].items()},
        )


def start_workflow(spec: ProcedureSpec, data: Mapping[str, Any] | None = None) -> BpmnWorkflow:
    """Create a workflow for ``spec`` with initial ``data`` and run it to its first wait."""
    wf = BpmnWorkflow(spec.spec, spec.subprocess_specs, script_engine=_SCRIPT_ENGINE)
    if data:
        wf.data.update(data)
        for task in wf.get_tasks(state=TaskState.READY):
            task.data.update(data)
    _advance(wf)
    return wf


def human_tasks(wf: BpmnWorkflow) -> list[HumanTask]:
    """The ready human (user or manual) tasks of ``wf``, subprocesses included."""
    result = []
    for task in wf.get_tasks(state=TaskState.READY, manual=True):
        ts = task.task_spec
        result.append(
            HumanTask(
                task_id=str(task.id),
                step_id=ts.bpmn_id,
                step_name=ts.bpmn_name or ts.bpmn_id,
                lane=ts.lane,
                process_id=task.workflow.spec.name,
                properties=dict(getattr(ts, "extensions", None) or {}),
            )
        )
    return result


def complete_task(wf: BpmnWorkflow, task_id: str, data: Mapping[str, Any] | None = None) -> None:
    """Complete the ready human task ``task_id`` with form ``data`` and advance."""
    try:
        task = wf.get_task_from_id(UUID(task_id))
    except Exception as err:  # Spiff raises its own TaskNotFoundException, or ValueError on a bad UUID
        raise EngineError(f"Task {task_id} does not belong to this workflow.") from err
    if task.state != TaskState.READY or not task.task_spec.manual:
        raise EngineError(f"Task {task_id} is not a ready human task (state {TaskState.get_name(task.state)}).")
    if data:
        task.set_data(**dict(data))
    task.run()
    _advance(wf)


def previous_human_task(wf: BpmnWorkflow, task_id: str) -> str | None:
    """The human step completed just before ``task_id`` on its path, or None at the first step.

    Raises :class:`EngineError` when the way back crosses a join of parallel
    branches: the other branches would have to be undone too.
    """
    try:
        task = wf.get_task_from_id(UUID(task_id))
    except Exception as err:
        raise EngineError(f"Task {task_id} does not belong to this workflow.") from err
    node = task.parent
    while True:
        while node is not None:
            if isinstance(node.task_spec, UnstructuredJoin) and len(node.task_spec.inputs) > 1:
                raise EngineError("The previous steps ran in parallel branches; a dossier cannot be returned across their join.")
            if node.task_spec.manual and node.state == TaskState.COMPLETED:
                return str(node.id)
            node = node.parent
        parent_id = task.workflow.parent_task_id
        if parent_id is None:
            return None
        task = wf.get_task_from_id(parent_id)  # leave a called process through its call activity
        node = task.parent


def reset_to(wf: BpmnWorkflow, task_id: str) -> None:
    """Make the completed human step ``task_id`` ready again; later work is dropped."""
    wf.reset_from_task_id(UUID(task_id))
    _advance(wf)


def _advance(wf: BpmnWorkflow) -> None:
    wf.refresh_timers()
    wf.do_engine_steps()
    prune_finished(wf)


def prune_finished(wf: BpmnWorkflow) -> int:
    """Drop finished tasks the workflow can no longer need; return how many.

    SpiffWorkflow keeps every task it ever ran in a tree, so a loop grows the
    state on every pass. What the engine still needs is the root, every live
    (not finished) task and its ancestors, and the parent of each live task.
    Among the ancestors, a finished task with a single, finished child carries
    nothing a later step reads (joins look at the *direct* parents of their
    waiting instances, which are kept), so chains of them are spliced out.
    Finished branches off the live spine (ended or cancelled branches) go too.
    History is the audit trail's job, not the workflow state's.
    """
    removed = 0
    for workflow in [wf, *wf.subprocesses.values()]:
        removed += _prune_one(wf, workflow)
    return removed


def _prune_one(top: BpmnWorkflow, wf: Any) -> int:
    tasks = wf.tasks
    root = wf.task_tree
    # A join that is collecting branches (an instance WAITING) remembers the
    # branches already in by its finished instances and their parents.
    collecting = {t.task_spec for t in tasks.values() if t.state == TaskState.WAITING and isinstance(t.task_spec, UnstructuredJoin)}
    keep: set[UUID] = set()
    for task in tasks.values():
        if not task.has_state(_FINISHED) or task.task_spec in collecting:
            node = task
            while node is not None and node.id not in keep:
                keep.add(node.id)
                node = node.parent
    keep.add(root.id)
    if wf.last_task is not None:
        keep.add(wf.last_task.id)
    if wf.is_completed():
        return 0
    # Dead branches: finished tasks not on any live spine.
    dead = [tid for tid in tasks if tid not in keep]
    for tid in dead:
        task = tasks.get(tid)
        if task is not None:
            _forget(top, wf, task)
    # Splice out older repeats: a finished single-child ancestor whose step
    # occurs again further down. SpiffWorkflow looks up the ancestor chain for
    # *which* steps came before (loop-back parallel gateways, structured
    # joins), never for how often, so the latest instance of each is enough.
    later = _specs_below(root, tasks)
    spliced = 0
    for task in list(tasks.values()):
        if task is root or task.id == getattr(wf.last_task, "id", None) or not task.has_state(TaskState.COMPLETED):
            continue
        children = task._children
        if len(children) != 1:
            continue
        child = tasks.get(children[0])
        if child is None or not child.has_state(TaskState.COMPLETED):
            continue
        if task.task_spec.name not in later.get(child.id, ()):
            continue
        if isinstance(task.task_spec, SubWorkflowTask) and task.id in top.subprocesses:
            continue
        parent = tasks[task._parent]
        parent._children = [child.id if c == task.id else c for c in parent._children]
        child._parent = parent.id
        # Child data is kept whole in memory; the serializer stores it as a delta
        # against its new parent.
        del tasks[task.id]
        spliced += 1
    return len(dead) + spliced


def _specs_below(root: Any, tasks: Mapping[UUID, Any]) -> dict[UUID, frozenset[str]]:
    """For every task, the names of the specs in its subtree (itself included)."""
    order: list[Any] = []
    stack = [root]
    while stack:  # iterative: a long history must not hit the recursion limit
        node = stack.pop()
        order.append(node)
        stack.extend(tasks[c] for c in node._children if c in tasks)
    below: dict[UUID, frozenset[str]] = {}
    for node in reversed(order):
        names = {node.task_spec.name}
        for c in node._children:
            names |= below.get(c, frozenset())
        below[node.id] = frozenset(names)
    return below


def _forget(top: BpmnWorkflow, wf: Any, task: Any) -> None:
    """Remove ``task`` from ``wf`` (and its subprocess, if any)."""
    parent = wf.tasks.get(task._parent) if task._parent is not None else None
    if parent is not None and task.id in parent._children:
        parent._children = [c for c in parent._children if c != task.id]
    wf.tasks.pop(task.id, None)
    sub = top.subprocesses.pop(task.id, None)
    if sub is not None:
        for sub_task in list(sub.tasks.values()):
            top.subprocesses.pop(sub_task.id, None)


def dump_state(wf: BpmnWorkflow) -> str:
    """The workflow's state as JSON text, without its spec."""
    _REGISTRY._encoder_mode = True
    try:
        dct = _REGISTRY.convert(wf)
        dct[BpmnWorkflowSerializer.VERSION_KEY] = _SERIALIZER.VERSION
        return json.dumps(dct, cls=_ENCODER)
    finally:
        _REGISTRY._encoder_mode = False


def load_state(spec: ProcedureSpec, state: str) -> BpmnWorkflow:
    """Rebuild a workflow from :func:`dump_state` output and its version's ``spec``."""
    dct = json.loads(state)
    _SERIALIZER.migrate(dct)
    # The converter restores whatever it finds under these keys; objects that
    # are already specs pass through unchanged, so the cached spec is shared.
    dct["spec"] = spec.spec
    dct["subprocess_specs"] = spec.subprocess_specs
    wf = _REGISTRY.restore(dct)
    wf.script_engine = _SCRIPT_ENGINE
    return wf
