"""A bounded load-and-soak driver: the whole product over real HTTP, on loopback.

:func:`run` starts ``clients`` threads against a running ``motcua serve``
(``http://127.0.0.1:PORT``). They share the demo accounts (one bearer token
each) and play every part of one-stop work through the JSON API:

* receptionists receive dossiers for the deployed procedures at their desks,
  in person, online or by post (with an ``Idempotency-Key``);
* officers, heads of unit and leaders read their inbox, claim offered steps and
  complete them with form data made from each step's form fields (read from
  the deployed BPMN files, filled the way :mod:`engine.simulate` fills them);
  sometimes they return a step to the previous one, ask the applicant for a
  supplement (marked received, or withdrawn, a little later) or, at the tax
  office, pause the dossier for the financial obligation;
* receptionists find processed dossiers and return their results;
* citizens look their dossiers up and rate the returned ones.

Every request is timed and counted per action with its status code. A ``409
Conflict`` (two clients racing for one step, a dossier paused meanwhile) is
expected and counted apart; any 5xx, any other 4xx and any broken connection
is a failure. The run stops by itself: at ``seconds``, or after
``max_requests`` requests, and it receives at most ``max_dossiers`` dossiers.

Example::

    report = run("http://127.0.0.1:5000", "motcua-demo", seconds=60, seed=1)
    print(report.table())
    assert report.ok
"""

from __future__ import annotations

import http.client
import json
import random
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import yaml

from . import public, simulate
from .core import bpmn
from .core.calendar import VN_TZ

__all__ = ["DEMO_ORGANISATION", "HANDLING_ROLES", "ActionStats", "SoakReport", "run", "summary"]

#: The demo province whose accounts the clients sign in as.
DEMO_ORGANISATION = Path(__file__).resolve().parent.parent / "processes" / "demo" / "dong-nai.yaml"
#: Roles that handle dossiers (the accounts the clients use).
HANDLING_ROLES = ("receptionist", "officer", "head_of_unit", "leader")
API = "/api/v1"

#: Per-decision rates of the simulated people.
RETURN_RATE = 0.04  # an officer returns the step to the previous one
SUPPLEMENT_RATE = 0.04  # an officer asks the applicant to supplement (once per dossier)
ABANDON_RATE = 0.15  # of the supplement requests: the applicant withdraws instead
WITHDRAW_RATE = 0.01  # of the receipts: withdrawn a little later
ONLINE_SHARE = 0.3
POST_SHARE = 0.03
RATING_RATE = 0.6
#: Seconds an applicant takes to bring a supplement or pay.
PAUSE_SECONDS = (2.0, 12.0)
#: Dossiers being handled at once, per client: receptionists wait above this.
WIP_PER_CLIENT = 8
REQUEST_TIMEOUT = 60.0

_RETURN_CHANNEL = {"online": "online", "post": "post"}
_DIGITS = re.compile(r"\d+")


# --------------------------------------------------------------------------- report


@dataclass
class ActionStats:
    """Requests of one action (method and path template): statuses and latencies."""

    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def percentile(self, p: float) -> float:
        """Latency in milliseconds at percentile ``p`` (nearest rank); 0 without requests."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        rank = max(1, -(-len(ordered) * p // 100))  # ceil
        return round(ordered[int(rank) - 1] * 1000, 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "p50_ms": self.percentile(50),
            "p99_ms": self.percentile(99),
            "max_ms": round(max(self.latencies, default=0.0) * 1000, 1),
        }


@dataclass
class SoakReport:
    """What a soak run did and what went wrong."""

    #: Seconds of traffic (after the set-up: catalog and sign-ins), and of the set-up.
    seconds: float = 0.0
    setup_seconds: float = 0.0
    clients: int = 0
    actions: dict[str, ActionStats] = field(default_factory=lambda: defaultdict(ActionStats))
    #: Domain events that succeeded (received, claimed, completed, returned_results, ratings, …).
    events: Counter[str] = field(default_factory=Counter)
    #: 409 answers by their detail with numbers blanked (races and rules).
    conflicts: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    #: Dossier codes the run received.
    dossiers: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(a.requests for a in self.actions.values())

    @property
    def throughput(self) -> float:
        """Requests per second during the traffic (set-up requests included, set-up time not)."""
        return round(self.requests / self.seconds, 1) if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        """No 5xx, no unexpected 4xx, no broken connection."""
        return not (self.server_errors or self.unexpected or self.transport_errors)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "setup_seconds": round(self.setup_seconds, 1),
            "clients": self.clients,
            "requests": self.requests,
            "throughput_rps": self.throughput,
            "server_errors": len(self.server_errors),
            "unexpected_4xx": len(self.unexpected),
            "transport_errors": len(self.transport_errors),
            "conflicts": sum(self.conflicts.values()),
            "events": dict(sorted(self.events.items())),
            "actions": {name: stats.as_dict() for name, stats in sorted(self.actions.items())},
            "conflict_reasons": dict(self.conflicts.most_common(20)),
            "samples": {
                "server_errors": self.server_errors[:10],
                "unexpected_4xx": self.unexpected[:10],
                "transport_errors": self.transport_errors[:10],
            },
        }

    def table(self) -> str:
        """The figures as a plain-text table."""
        lines = [
            f"{self.requests} requests in {self.seconds:.0f} s (+ {self.setup_seconds:.0f} s set-up) with {self.clients} clients: {self.throughput} req/s; "
            f"5xx {len(self.server_errors)}, unexpected 4xx {len(self.unexpected)}, "
            f"transport errors {len(self.transport_errors)}, 409 {sum(self.conflicts.values())}",
            f"{'action':<48}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  statuses",
        ]
        for name, stats in sorted(self.actions.items()):
            d = stats.as_dict()
            statuses = " ".join(f"{k}×{v}" for k, v in d["statuses"].items())
            lines.append(f"{name:<48}{d['requests']:>9}{d['p50_ms']:>9}{d['p99_ms']:>9}{d['max_ms']:>9}  {statuses}")
        lines.append("events: " + ", ".join(f"{k} {v}" for k, v in sorted(self.events.items())))
        return "\n".join(lines)


# --------------------------------------------------------------------------- the shared world


@dataclass
class _Procedure:
    code: str
    first_step: str | None
    steps: dict[str, dict[str, Any]]
    financial_obligation: bool
    weight: float


@dataclass
class _Case:
    """What the clients remember of a dossier they received (the server holds the truth)."""

    code: str
    procedure: _Procedure
    phone: str
    channel: str
    desk: str
    status: int = 2
    supplement_asked: bool = False
    payment_asked: bool = False
    paused: bool = False
    withdraw_at: float | None = None
    rated: bool = False


@dataclass
class _Pause:
    code: str
    kind: str  # supplement | payment
    due: float
    actor: str
    abandon: bool


class _World:
    """State shared by the client threads, behind one lock."""

    def __init__(self, max_dossiers: int, max_requests: int, wip_cap: int) -> None:
        self.lock = threading.Lock()
        self.report = SoakReport()
        self.max_dossiers, self.max_requests, self.wip_cap = max_dossiers, max_requests, wip_cap
        self.requests = 0
        self.stop = threading.Event()
        self.tokens: dict[str, str] = {}
        self.grants: dict[str, list[tuple[str, str]]] = {}
        self.desks: dict[str, str] = {}  # desk agency code → a receptionist there
        self.handlers: list[str] = []
        self.inbox_size: dict[str, int] = {}
        self.procedures: dict[str, _Procedure] = {}
        self.fallback_steps: dict[str, dict[str, Any]] = {}
        self.cases: dict[str, _Case] = {}
        self.by_id: dict[int, str] = {}
        self.processed: dict[str, str | None] = {}  # code → who returns it (None: its desk)
        self.returned: list[str] = []
        self.pauses: dict[str, _Pause] = {}

    def active(self) -> int:
        return sum(1 for c in self.cases.values() if c.status in (2, 4, 5, 6))

    def learn(self, dossier: Mapping[str, Any] | None) -> None:
        """Remember what a dossier answer says (status, the id behind its steps)."""
        if not isinstance(dossier, Mapping) or "code" not in dossier:
            return
        code = dossier["code"]
        with self.lock:
            for task in dossier.get("open_tasks") or ():
                self.by_id[task["dossier_id"]] = code
            case = self.cases.get(code)
            status = dossier.get("status")
            if case is not None and isinstance(status, int):
                case.status = status
                case.paused = status in (5, 6)
            if status == 9 and code not in self.processed:
                self.processed[code] = None

    def step(self, dossier_id: int, step_id: str) -> tuple[_Case | None, dict[str, Any] | None, bool]:
        """The case, the step's definition and whether it is its procedure's first step."""
        with self.lock:
            code = self.by_id.get(dossier_id)
            case = self.cases.get(code) if code else None
        if case is not None:
            return case, case.procedure.steps.get(step_id), step_id == case.procedure.first_step
        return None, self.fallback_steps.get(step_id), True  # unknown dossier: do not return or pause it


# --------------------------------------------------------------------------- HTTP


class _Client:
    """One keep-alive connection and the statistics it feeds."""

    def __init__(self, world: _World, host: str, port: int) -> None:
        self.world, self.host, self.port = world, host, port
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def call(
        self, method: str, path: str, label: str, body: Any = None, user: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send one request; ``(status, parsed JSON or None)``; status 0 when the connection broke."""
        world = self.world
        with world.lock:
            world.requests += 1
            if world.requests >= world.max_requests:
                world.stop.set()
        sent = {"Accept": "application/json", **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body, ensure_ascii=False).encode()
            sent["Content-Type"] = "application/json"
        if user is not None:
            sent["Authorization"] = f"Bearer {world.tokens[user]}"
        started = time.monotonic()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT)
            self.conn.request(method, API + path, body=payload, headers=sent)
            response = self.conn.getresponse()
            raw = response.read()
            status = response.status
            if response.getheader("Connection", "").lower() == "close":
                self.close()
        except (OSError, http.client.HTTPException) as err:
            self.close()
            with world.lock:
                world.report.actions[label].latencies.append(time.monotonic() - started)
                world.report.actions[label].statuses[0] += 1
                world.report.transport_errors.append(f"{method} {path}: {type(err).__name__}: {err}")
            return 0, None
        elapsed = time.monotonic() - started
        try:
            data = json.loads(raw) if raw and raw[:1] in (b"{", b"[") else None
        except ValueError:
            data = None
        with world.lock:
            stats = world.report.actions[label]
            stats.latencies.append(elapsed)
            stats.statuses[status] += 1
            detail = str(data.get("detail", ""))[:300] if isinstance(data, dict) else raw[:300].decode("utf-8", "replace")
            if status >= 500:
                world.report.server_errors.append(f"{status} {method} {path}: {detail}")
            elif status == 409:
                world.report.conflicts[f"{label}: {_DIGITS.sub('N', detail)[:160]}"] += 1
            elif status >= 400:
                world.report.unexpected.append(f"{status} {method} {path}: {detail}")
        return status, data


# --------------------------------------------------------------------------- set-up


def _accounts(organisation: Path) -> list[str]:
    data = yaml.safe_load(organisation.read_text(encoding="utf-8")) or {}
    return [
        o["username"] for o in data.get("officers", [])
        if any(r.get("role") in HANDLING_ROLES for r in o.get("roles", []))
    ]


def _load_procedures(client: _Client, world: _World) -> None:
    """Each deployed procedure's steps and forms, from its latest version's BPMN files."""
    status, listed = client.call("GET", "/procedures?page_size=200", "GET /procedures")
    if status != 200 or not isinstance(listed, list):
        why = f"HTTP {status}" if status else "no answer: " + (world.report.transport_errors or ["?"])[-1]
        raise RuntimeError(f"The procedure catalog of {client.host}:{client.port} could not be read ({why}).")
    for item in listed:
        code = item["code"]
        status, version = client.call("GET", f"/procedures/{quote(code)}", "GET /procedures/{code}")
        if status != 200:
            continue
        files: dict[str, bytes] = {}
        for name in version.get("files", []):
            path = f"/procedures/{quote(code)}/versions/{version['version']}/files/{quote(name)}"
            start = time.monotonic()
            conn = http.client.HTTPConnection(client.host, client.port, timeout=REQUEST_TIMEOUT)
            try:
                conn.request("GET", API + path)
                response = conn.getresponse()
                content = response.read()
            finally:
                conn.close()
            with world.lock:
                stats = world.report.actions["GET /procedures/{code}/versions/{n}/files/{name}"]
                stats.latencies.append(time.monotonic() - start)
                stats.statuses[response.status] += 1
            if response.status == 200:
                files[name] = content
        definition, _problems = bpmn.analyse(files)
        if definition is None:
            continue
        steps = {k: v.as_dict() for k, v in definition.steps.items()}
        world.procedures[code] = _Procedure(
            code, next(iter(steps), None), steps, definition.financial_obligation, simulate.DEFAULT_MIX.get(code, 1.0)
        )
        for step_id, step in steps.items():
            merged = world.fallback_steps.setdefault(step_id, {"form": [], "agency": step.get("agency")})
            known = {f["id"] for f in merged["form"]}
            merged["form"] += [f for f in step["form"] if f["id"] not in known]
    if not world.procedures:
        raise RuntimeError("No procedure is deployed on the server.")


def _login(client: _Client, world: _World, username: str, password: str) -> None:
    status, body = client.call("POST", "/auth/login", "POST /auth/login", {"username": username, "password": password})
    if status != 200 or not isinstance(body, dict):
        return
    grants = [(g["agency"], g["role"]) for g in body.get("roles", []) if g.get("role") in HANDLING_ROLES and g.get("agency")]
    with world.lock:
        world.tokens[username] = body["token"]
        world.grants[username] = grants
        for agency, role in grants:
            if role == "receptionist":
                world.desks.setdefault(agency, username)
        if grants:
            world.handlers.append(username)
            world.inbox_size[username] = 1


# --------------------------------------------------------------------------- what people do


class _Player:
    """One client thread: picks what to do next, does it over HTTP."""

    def __init__(self, world: _World, client: _Client, rng: random.Random) -> None:
        self.world, self.http, self.rng = world, client, rng
        plan_start = datetime.now(VN_TZ)
        self.plan = simulate.SimulationPlan(start=plan_start, end=plan_start + timedelta(seconds=1), dossiers=0,
                                            rework_rate=0.06, refusal_rate=0.03)

    # ---------------------------------------------------------------- loop

    def play(self, deadline: float) -> None:
        world = self.world
        while time.monotonic() < deadline and not world.stop.is_set():
            action = self._choose()
            action()
        self.http.close()

    def _choose(self) -> Callable[[], None]:
        world, now = self.world, time.monotonic()
        with world.lock:
            can_receive = len(world.cases) < world.max_dossiers and world.active() < world.wip_cap
            due_pause = any(p.due <= now for p in world.pauses.values())
            due_withdraw = any(c.withdraw_at is not None and c.withdraw_at <= now and c.status in (2, 4) for c in world.cases.values())
            has_processed = bool(world.processed)
            to_rate = bool(world.returned)
            has_cases = bool(world.cases)
        options: list[tuple[Callable[[], None], float]] = [
            (self.receive, 3.0 if can_receive else 0.0),
            (self.work, 10.0),
            (self.resume, 4.0 if due_pause else 0.0),
            (self.withdraw, 2.0 if due_withdraw else 0.0),
            (self.return_result, 3.0 if has_processed else 0.0),
            (self.find_processed, 0.4),
            (self.rate, 1.5 if to_rate else 0.0),
            (self.lookup, 1.0 if has_cases else 0.0),
            (self.view, 0.8 if has_cases else 0.0),
        ]
        actions, weights = zip(*[(a, w) for a, w in options if w > 0], strict=True)
        return self.rng.choices(actions, weights)[0]

    # ---------------------------------------------------------------- desk

    def receive(self) -> None:
        world, rng = self.world, self.rng
        with world.lock:
            if not world.desks:
                return
            desk = rng.choice(sorted(world.desks))
            user = world.desks[desk]
            procedures = list(world.procedures.values())
        procedure = rng.choices(procedures, [p.weight for p in procedures])[0]
        roll = rng.random()
        channel = "online" if roll < ONLINE_SHARE else ("post" if roll < ONLINE_SHARE + POST_SHARE else "in_person")
        phone = f"09{rng.randint(10_000_000, 99_999_999)}"
        name = simulate.person_name(rng)
        email = f"cd{rng.randint(1, 10**6)}@example.vn" if rng.random() < 0.3 else None
        body = {"procedure_code": procedure.code, "agency_code": desk, "channel": channel,
                "applicant": {"name": name, "phone": phone, "email": email}, "data": {}}
        status, out = self.http.call("POST", "/dossiers", "POST /dossiers", body, user,
                                     headers={"Idempotency-Key": uuid.uuid4().hex})
        if status != 201 or not isinstance(out, dict):
            return
        case = _Case(out["code"], procedure, phone, channel, desk, status=out.get("status", 2))
        if rng.random() < WITHDRAW_RATE:
            case.withdraw_at = time.monotonic() + rng.uniform(5, 30)
        with world.lock:
            world.cases[case.code] = case
            world.report.dossiers.append(case.code)
            world.report.events["received"] += 1
        world.learn(out)

    def withdraw(self) -> None:
        world, now = self.world, time.monotonic()
        with world.lock:
            due = [c for c in world.cases.values() if c.withdraw_at is not None and c.withdraw_at <= now and c.status in (2, 4)]
            if not due:
                return
            case = self.rng.choice(due)
            case.withdraw_at = None
            user = world.desks.get(case.desk)
        if user is None:
            return
        self._withdraw(case, user)

    def _withdraw(self, case: _Case, user: str) -> None:
        status, out = self.http.call("POST", f"/dossiers/{case.code}/withdraw", "POST /dossiers/{code}/withdraw",
                                     {"reason": "Công dân có đơn xin rút hồ sơ."}, user)
        if status == 200:
            self.world.learn(out)
            with self.world.lock:
                self.world.report.events["withdrawn"] += 1

    def find_processed(self) -> None:
        """A receptionist searches for dossiers whose result is ready."""
        world = self.world
        with world.lock:
            if not world.desks:
                return
            user = world.desks[self.rng.choice(sorted(world.desks))]
        status, page = self.http.call("GET", "/dossiers?" + urlencode({"status": 9, "page_size": 50}), "GET /dossiers?status", user=user)
        if status != 200 or not isinstance(page, dict):
            return
        with world.lock:
            for item in page.get("items", []):
                world.processed.setdefault(item["code"], user)

    def return_result(self) -> None:
        world = self.world
        with world.lock:
            if not world.processed:
                return
            code = self.rng.choice(sorted(world.processed))
            returner = world.processed.pop(code)
            case = world.cases.get(code)
            user = returner or (world.desks.get(case.desk) if case else None)
        if user is None:
            return
        channel = _RETURN_CHANNEL.get(case.channel if case else "", "desk")
        status, out = self.http.call("POST", f"/dossiers/{code}/return-result", "POST /dossiers/{code}/return-result",
                                     {"channel": channel}, user)
        if status == 200:
            world.learn(out)
            with world.lock:
                world.report.events["results_returned"] += 1
                if case is not None and self.rng.random() < RATING_RATE:
                    world.returned.append(code)

    # ---------------------------------------------------------------- citizens

    def lookup(self) -> None:
        world = self.world
        with world.lock:
            case = world.cases[self.rng.choice(list(world.cases))] if world.cases else None
        if case is None:
            return
        query = urlencode({"secret": public.secret_of(case.phone)})
        status, out = self.http.call("GET", f"/public/dossiers/{case.code}?{query}", "GET /public/dossiers/{code}")
        if status == 200 and isinstance(out, dict):
            with world.lock:
                world.report.events["lookups"] += 1

    def rate(self) -> None:
        world, rng = self.world, self.rng
        with world.lock:
            if not world.returned:
                return
            code = world.returned.pop(rng.randrange(len(world.returned)))
            case = world.cases[code]
        centre = rng.choice((2.5, 4.0, 4.5))
        scores = {key: min(5, max(1, round(rng.gauss(centre, 0.7)))) for key in public.CRITERIA}
        body = {"secret": public.secret_of(case.phone), "scores": scores,
                "comment": "Cán bộ hướng dẫn tận tình." if min(scores.values()) >= 3 else "Thời gian chờ còn lâu."}
        status, _out = self.http.call("POST", f"/public/dossiers/{code}/rating", "POST /public/dossiers/{code}/rating", body)
        if status == 201:
            with world.lock:
                case.rated = True
                world.report.events["ratings"] += 1

    def view(self) -> None:
        """Someone at the desk looks a dossier up, its history, or searches by applicant."""
        world, rng = self.world, self.rng
        with world.lock:
            case = world.cases[rng.choice(list(world.cases))]
            user = world.desks.get(case.desk)
        if user is None:
            return
        roll = rng.random()
        if roll < 0.4:
            status, out = self.http.call("GET", f"/dossiers/{case.code}", "GET /dossiers/{code}", user=user)
            if status == 200:
                world.learn(out)
        elif roll < 0.7:
            self.http.call("GET", f"/dossiers/{case.code}/history", "GET /dossiers/{code}/history", user=user)
        else:
            self.http.call("GET", "/dossiers?" + urlencode({"applicant": "Nguyễn", "page_size": 20}), "GET /dossiers?applicant", user=user)

    # ---------------------------------------------------------------- officers

    def work(self) -> None:
        """An officer opens the inbox; finishes a held step or claims an offered one and works on it."""
        world, rng = self.world, self.rng
        with world.lock:
            if not world.handlers:
                return
            users = list(world.handlers)
            weights = [1 + 3 * world.inbox_size.get(u, 0) for u in users]
        user = rng.choices(users, weights)[0]
        status, inbox = self.http.call("GET", "/tasks/inbox?page_size=20", "GET /tasks/inbox", user=user)
        if status != 200 or not isinstance(inbox, dict):
            return
        with world.lock:
            world.inbox_size[user] = min(20, len(inbox["mine"]) + len(inbox["queue"]))
            paused = {c.code for c in world.cases.values() if c.paused}
            mine = [t for t in inbox["mine"] if world.by_id.get(t["dossier_id"]) not in paused]
            queue = [t for t in inbox["queue"] if world.by_id.get(t["dossier_id"]) not in paused]
        if mine:
            self._handle(user, rng.choice(mine))
            return
        if not queue:
            return
        task = rng.choice(queue[:5])
        status, claimed = self.http.call("POST", f"/tasks/{task['id']}/claim", "POST /tasks/{id}/claim", user=user)
        if status == 200 and isinstance(claimed, dict):
            with world.lock:
                world.report.events["claimed"] += 1
            self._handle(user, claimed)

    def _handle(self, user: str, task: Mapping[str, Any]) -> None:
        world, rng = self.world, self.rng
        case, step, first = world.step(task["dossier_id"], task["step_id"])
        if case is not None and not first and rng.random() < RETURN_RATE:
            status, out = self.http.call("POST", f"/tasks/{task['id']}/return", "POST /tasks/{id}/return",
                                         {"reason": "Hồ sơ cần xem xét lại ở bước trước."}, user)
            if status == 200:
                world.learn(out)
                with world.lock:
                    world.report.events["returned_to_previous"] += 1
            return
        if case is not None and not first and rng.random() < SUPPLEMENT_RATE:
            with world.lock:
                asked, case.supplement_asked = case.supplement_asked or case.status not in (2, 4), True
            if not asked:
                self._pause(case, "supplement", user, ["Bản sao giấy tờ còn thiếu", "Bản chính để đối chiếu"])
                return
        now = datetime.now(VN_TZ)
        form = (step or {}).get("form", [])
        data = {f["id"]: simulate.form_value(rng, f, self.plan, now) for f in form if f.get("required") or rng.random() < 0.5}
        status, out = self.http.call("POST", f"/tasks/{task['id']}/complete", "POST /tasks/{id}/complete", {"data": data}, user)
        if status != 200:
            return
        world.learn(out)
        with world.lock:
            world.report.events["completed"] += 1
        if (case is not None and step is not None and case.procedure.financial_obligation and not case.payment_asked
                and step.get("agency") == simulate.TAX_AGENCY and isinstance(out, dict) and out.get("status") in (2, 4)):
            case.payment_asked = True
            self._pause(case, "payment", user, ["Lệ phí trước bạ", "Tiền sử dụng đất"])

    def _pause(self, case: _Case, kind: str, user: str, items: list[str]) -> None:
        world, rng = self.world, self.rng
        status, out = self.http.call("POST", f"/dossiers/{case.code}/{kind}-request", f"POST /dossiers/{{code}}/{kind}-request",
                                     {"items": items}, user)
        if status != 200:
            return
        world.learn(out)
        abandon = kind == "supplement" and rng.random() < ABANDON_RATE
        # The desk takes the supplement in; the tax office sees the payment.
        resumer = world.desks.get(case.desk, user) if kind == "supplement" else user
        with world.lock:
            world.pauses[case.code] = _Pause(case.code, kind, time.monotonic() + rng.uniform(*PAUSE_SECONDS), resumer, abandon)
            world.report.events[f"{kind}_requests"] += 1

    def resume(self) -> None:
        world, now = self.world, time.monotonic()
        with world.lock:
            due = [p for p in world.pauses.values() if p.due <= now]
            if not due:
                return
            pause = self.rng.choice(due)
            del world.pauses[pause.code]
            case = world.cases[pause.code]
        if pause.abandon:
            desk_user = world.desks.get(case.desk)
            if desk_user is not None:
                self._withdraw(case, desk_user)
            return
        status, out = self.http.call("POST", f"/dossiers/{pause.code}/{pause.kind}-received",
                                     f"POST /dossiers/{{code}}/{pause.kind}-received", {}, pause.actor)
        if status == 200:
            world.learn(out)
            with world.lock:
                world.report.events[f"{pause.kind}_received"] += 1


# --------------------------------------------------------------------------- run


def _endpoint(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    if parts.scheme != "http" or parts.hostname != "127.0.0.1" or parts.path not in ("", "/"):
        raise ValueError(f"The soak only runs against http://127.0.0.1:PORT on this machine, not {base_url!r}.")
    return parts.hostname, parts.port or 80


def run(
    base_url: str | Sequence[str],
    password: str,
    seconds: float,
    seed: int,
    clients: int = 6,
    progress: Callable[[float, int, int], None] | None = None,
    *,
    organisation: Path = DEMO_ORGANISATION,
    max_dossiers: int = 5000,
    max_requests: int = 500_000,
) -> SoakReport:
    """Drive ``clients`` threads of one-stop work against the server at ``base_url`` for ``seconds``.

    ``base_url`` may list several web processes of one deployment: the clients
    are spread over them, so the same dossier is worked on through all of them.

    The accounts are the handling officers of ``organisation`` (the demo
    province by default), all signing in with ``password``. ``progress`` is
    called about every five seconds with (seconds elapsed, requests so far,
    dossiers received). ``seconds`` bounds the whole run, set-up (reading the
    catalog, signing in) included. Returns the report; it never raises for what the server
    answers (that is in the report), only for a bad argument or a server that
    lets nobody in or deploys no procedure.
    """
    if not 0 < seconds <= 86_400:
        raise ValueError("The soak lasts more than 0 and at most 86,400 seconds.")
    if not 1 <= clients <= 64:
        raise ValueError("Use 1 to 64 clients.")
    if max_dossiers < 0 or max_requests < 1:
        raise ValueError("max_dossiers must not be negative and max_requests must be positive.")
    endpoints = [_endpoint(url) for url in ([base_url] if isinstance(base_url, str) else list(base_url))]
    if not endpoints:
        raise ValueError("Give at least one server URL.")
    host, port = endpoints[0]
    world = _World(max_dossiers, max_requests, WIP_PER_CLIENT * clients)
    world.report.clients = clients
    started = time.monotonic()
    setup = _Client(world, host, port)
    _load_procedures(setup, world)
    setup.close()

    accounts = _accounts(organisation)
    login_clients = [_Client(world, *endpoints[i % len(endpoints)]) for i in range(clients)]

    def login_some(index: int) -> None:
        for username in accounts[index::clients]:
            _login(login_clients[index], world, username, password)
        login_clients[index].close()

    _in_threads(clients, login_some)
    if not world.handlers:
        raise RuntimeError("No demo account could sign in; check the password and that the organisation is loaded.")

    deadline = started + seconds
    traffic = time.monotonic()
    world.report.setup_seconds = traffic - started
    players = [_Player(world, _Client(world, *endpoints[i % len(endpoints)]), random.Random(f"{seed}/{i}")) for i in range(clients)]
    threads = [threading.Thread(target=p.play, args=(deadline,), name=f"soak-{i}", daemon=True) for i, p in enumerate(players)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=5.0 / len(threads))
        if progress is not None:
            with world.lock:
                figures = (time.monotonic() - started, world.requests, len(world.cases))
            progress(*figures)
    world.report.seconds = time.monotonic() - traffic
    return world.report


def _in_threads(count: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def summary(report: SoakReport) -> Sequence[str]:
    """The report's problems, one line each (empty when the run was clean)."""
    return [f"5xx: {s}" for s in report.server_errors] + [f"unexpected 4xx: {s}" for s in report.unexpected] + [
        f"transport: {s}" for s in report.transport_errors
    ]
