"""Which agency a step runs at, resolved from its lane against the dossier.

A lane's ``agency`` property is relative to the dossier's *home* agency (the
commune or unit the dossier belongs to)::

    (empty), home, dossier, dossier.commune   the home agency itself
    parent, parent.parent                     one or two levels up
    dossier.district, dossier.province        the nearest enclosing agency of that level
    named:KIND                                the nearest agency of that kind serving the
                                              dossier: a child of the home agency or of
                                              one of its ancestors (e.g. named:vpdk finds the
                                              district's land registration branch, else the
                                              province's office)
    code:CODE                                 exactly that agency

Works for a tree of any depth, so both the two-tier (province → commune) and
the three-tier (province → district → commune) organisations resolve.

Example::

    tree = AgencyTree([AgencyNode(1, "H56", "province", "ubnd", None), ...])
    tree.resolve("named:thue", home_id=7)   # → id of the tax office serving agency 7
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

__all__ = ["AgencyNode", "AgencyTree", "AssignmentError"]


class AssignmentError(ValueError):
    """A lane's agency expression that names nothing for this dossier."""


@dataclass(frozen=True)
class AgencyNode:
    id: int
    code: str
    level: str
    kind: str
    parent_id: int | None
    active: bool = True


class AgencyTree:
    """An immutable snapshot of the agency tree, for resolving lanes."""

    def __init__(self, nodes: Iterable[AgencyNode]) -> None:
        self.nodes = {n.id: n for n in nodes}
        self.by_code = {n.code: n for n in self.nodes.values()}
        self.children: dict[int | None, list[AgencyNode]] = {}
        for node in sorted(self.nodes.values(), key=lambda n: n.id):
            self.children.setdefault(node.parent_id, []).append(node)

    def ancestors(self, agency_id: int) -> list[AgencyNode]:
        """The agency itself, then its parent, up to the root."""
        chain = []
        seen: set[int] = set()
        current = self.nodes.get(agency_id)
        while current is not None and current.id not in seen:  # guard against a cycle in bad data
            chain.append(current)
            seen.add(current.id)
            current = self.nodes.get(current.parent_id) if current.parent_id is not None else None
        return chain

    def resolve(self, expression: str | None, home_id: int) -> int:
        """The id of the agency ``expression`` names for a dossier at ``home_id``."""
        if home_id not in self.nodes:
            raise AssignmentError(f"Agency {home_id} is unknown.")
        text = (expression or "").strip()
        chain = self.ancestors(home_id)
        if text in ("", "home", "dossier", "dossier.commune"):
            return home_id
        if text.startswith("parent"):
            hops = text.count("parent")
            if text != ".".join(["parent"] * hops) or hops >= len(chain):
                raise AssignmentError(f"'{text}' goes above the top of the agency tree.")
            return chain[hops].id
        if text.startswith("dossier."):
            level = text.split(".", 1)[1]
            for node in chain:
                if node.level == level:
                    return node.id
            raise AssignmentError(f"No agency of level '{level}' encloses {self.nodes[home_id].code}.")
        if text.startswith("named:"):
            kind = text.split(":", 1)[1].strip().lower()
            for node in chain:
                if node.kind == kind and node.active:
                    return node.id
                for child in self.children.get(node.id, []):
                    if child.kind == kind and child.active:
                        return child.id
            raise AssignmentError(f"No agency of kind '{kind}' serves {self.nodes[home_id].code}.")
        if text.startswith("code:"):
            node = self.by_code.get(text.split(":", 1)[1].strip())
            if node is None:
                raise AssignmentError(f"No agency with code '{text[5:]}'.")
            return node.id
        raise AssignmentError(
            f"'{text}' is not an agency expression; use home, parent, dossier.district, dossier.province, named:KIND or code:CODE."
        )
