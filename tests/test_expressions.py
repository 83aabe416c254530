"""Tests for engine.core.expressions: the safe expression language."""

from __future__ import annotations

import ast
import builtins
import datetime as dt
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.parser import BpmnParser
from SpiffWorkflow.util.task import TaskState

from engine.core.expressions import (
    FUNCTIONS,
    ExpressionError,
    ExpressionProblem,
    SafeScriptEngine,
    check_expression,
    check_script,
    evaluate,
    run_script,
)

DATA: dict[str, Any] = {
    "approved": True,
    "fee": 300000,
    "amount": 150,
    "documents": ["cmnd.pdf", "don.pdf", "anh.jpg"],
    "applicant": {"name": "Nguyễn Văn A", "age": 34, "address": {"province": "HN"}},
    "guardian": None,
    "province": "HCM",
    "urgent": False,
    "submitted_on": "2024-05-01",
    "scores": [4, 8.5, 2],
    "phí": 20000,
    "title": "  Giấy Phép  ",
}


# --------------------------------------------------------------------------
# Valid expressions
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("approved == True and fee <= 500000", True),
        ("approved and fee > 500000", False),
        ('"P3D"', "P3D"),
        ("'PT4H' if urgent else 'P5D'", "P5D"),
        ("len(documents) >= 2", True),
        ("len(documents)", 3),
        ('applicant["age"] >= 18 or guardian is not None', True),
        ('applicant["address"]["province"]', "HN"),
        ("documents[0]", "cmnd.pdf"),
        ("documents[-1]", "anh.jpg"),
        ("guardian is None", True),
        ('contains(["HN", "HCM"], province) and not urgent', True),
        ('contains(applicant, "age")', True),
        ('contains(applicant["name"], "Văn")', True),
        ('"don.pdf" in documents', True),
        ('"x.pdf" not in documents', True),
        ("0 < amount <= 200", True),
        ("amount * 2 + 1", 301),
        ("amount / 4", 37.5),
        ("amount // 4", 37),
        ("amount % 7", 3),  # 150 = 21 * 7 + 3
        ("2 ** 10", 1024),
        ("-amount + +5", -145),
        ("phí * 3", 60000),
        ("max(scores)", 8.5),
        ("min(3, 1, 2)", 1),
        ("sum(scores)", 14.5),
        ("abs(-7)", 7),
        (
            "round(2.675, 1)",
            2.7,
        ),  # binary float: 2.675 is 2.67499..., rounds to 2.7 at 1 digit
        ("round(7.5)", 8),
        ('int("42") + 1', 43),
        ('float("2.5") * 2', 5.0),
        ('str(12) + "/QĐ"', "12/QĐ"),
        ("bool(documents)", True),
        ('lower("ABC") + upper("d")', "abcD"),
        ("strip(title)", "Giấy Phép"),
        ('startswith(applicant["name"], "Nguyễn")', True),
        ('endswith(documents[2], ".pdf")', False),
        ('date("2024-05-31")', dt.date(2024, 5, 31)),
        ('date("2024-05-31T08:30:00")', dt.date(2024, 5, 31)),
        ('days_between(submitted_on, "2024-05-31")', 30),
        ('days_between("2024-03-01", "2024-02-01")', -29),  # 2024 is a leap year
        ('days_between(submitted_on, date("2024-12-31")) > 15', True),
        ('date(submitted_on) < date("2024-06-01")', True),
        ("any([False, 0, 1])", True),
        ("all([True, 1, 'x'])", True),
        ("all([])", True),
        ('[1, "a"] + [None]', [1, "a", None]),
        ("(1, 2)", (1, 2)),
        ('{"total": amount, "ok": approved}', {"total": 150, "ok": True}),
        ('"ab" * 3', "ababab"),
        ("[0] * 3", [0, 0, 0]),
        ('"a" + "b" if amount > 100 else "c"', "ab"),
        ("10 ** 30", 10**30),
        ("\n    amount > 100\n  ", True),  # indentation from BPMN XML is ignored
        ("None", None),
        ("1.5e3", 1500.0),
    ],
)
def test_valid_expressions(text: str, expected: Any) -> None:
    assert check_expression(text) == []
    result = evaluate(text, DATA)
    assert result == expected
    assert type(result) is type(expected)


def test_evaluate_does_not_modify_data() -> None:
    data = {"documents": ["a"], "n": 1}
    evaluate("documents + ['b']", data)
    assert data == {"documents": ["a"], "n": 1}


def test_functions_are_the_documented_set() -> None:
    assert set(FUNCTIONS) == {
        "len",
        "min",
        "max",
        "abs",
        "round",
        "int",
        "float",
        "str",
        "bool",
        "lower",
        "upper",
        "strip",
        "contains",
        "startswith",
        "endswith",
        "date",
        "days_between",
        "sum",
        "any",
        "all",
    }
    with pytest.raises(TypeError):
        FUNCTIONS["eval"] = eval  # type: ignore[index]


def test_fields_and_functions_have_separate_names() -> None:
    # A field may be called like a function without clashing.
    assert evaluate("len + len(s)", {"len": 1, "s": "ab"}) == 3


# --------------------------------------------------------------------------
# Hostile and invalid expressions
# --------------------------------------------------------------------------

HOSTILE_EXPRESSIONS = [
    "__import__('os')",
    "().__class__.__mro__[1].__subclasses__()",
    "open('/etc/passwd').read()",
    "eval('1')",
    "exec('x = 1')",
    "compile('1', 'f', 'eval')",
    "getattr(x, 'y')",
    "type(x)",
    "globals()",
    "[x for x in range(10**9)]",
    "{x: 1 for x in y}",
    "sum(x for x in y)",
    "lambda: 1",
    "(lambda: 1)()",
    "9**9**9**9",
    "10**100000",
    "'a' * 10**9",
    "[1] * 10**9",
    "x.__class__",
    "x.y",
    "x.upper()",
    "_secret",
    "__builtins__",
    "f'{x}'",
    "(x := 1)",
    "f()()",
    "x['a']()",
    "len(*x)",
    "max(x, key=len)",
    "{**x}",
    "[*x]",
    "x[1:2]",
    "x[::-1]",
    "{1, 2}",
    "~x",
    "x << 100000",
    "x | y",
    "x @ y",
    "b'bytes'",
    "1j",
    "...",
    "x is 1",
    "x is not y",
    "await x",
    "(yield)",
    "10**31",
    "len(x, y)",
    "round()",
    "{1: 2}",
    "1 / 0",
    "x = 1",
    "import os",
    "",
    "   ",
    "(",
    "1 +",
    "\x00",
    "(" * 5000 + "1" + ")" * 5000,
    "-" * 100000 + "1",
    "(" * 300 + "1" + ")" * 300,
    "-" * 1500 + "1",
    "[" * 60 + "]" * 60,
    "+".join(["x"] * 5000),  # ~10 kB expression
    "x + " * 400 + "x",  # under 2,000 characters but nested 400 deep
    "[" + "x," * 600 + "]",  # under 2,000 characters but too many elements
]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("(" * 5000 + "1" + ")" * 5000, "too long"),
        ("-" * 100000 + "1", "too long"),
        ("x" * 2001, "too long"),
        ("(" * 300 + "1" + ")" * 300, "Syntax error"),
        ("-" * 1500 + "1", "nested too deeply"),
        ("x + " * 400 + "x", "nested too deeply"),
        ("[" + "x," * 600 + "]", "too complex"),
    ],
    ids=[
        "parens-10k",
        "minus-100k",
        "2001-chars",
        "parens-300",
        "minus-1500",
        "sum-400",
        "list-600",
    ],
)
def test_size_limits_have_specific_messages(text: str, fragment: str) -> None:
    [problem] = check_expression(text)
    assert fragment in problem.message


def test_within_limits_is_accepted() -> None:
    assert (
        evaluate("(" * 100 + "1" + ")" * 100, {}) == 1
    )  # parentheses do not nest the tree
    assert evaluate("-" * 40 + "1", {}) == 1
    assert evaluate("[" + "x," * 400 + "]", {"x": 0}) == [0] * 400
    assert evaluate("len('" + "é" * 1990 + "')", {}) == 1990


@pytest.mark.parametrize("text", HOSTILE_EXPRESSIONS, ids=lambda t: repr(t)[:40])
def test_hostile_expressions_are_rejected(text: str) -> None:
    started = time.perf_counter()
    problems = check_expression(text)
    assert problems, text
    assert all(isinstance(p, ExpressionProblem) and p.message for p in problems)
    with pytest.raises(ExpressionError) as info:
        evaluate(text, {"x": {"y": 1, "a": 2}, "y": [1, 2]})
    assert info.value.problems
    assert info.value.expression == text
    assert time.perf_counter() - started < 10  # bounded, whatever the load (not a speed target)


def test_hostile_code_never_runs(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {sentinel}')",
        f"open('{sentinel}', 'w')",
        f"(lambda: __import__('os').system('touch {sentinel}'))()",
        f"[__import__('os').system('touch {sentinel}') for _ in [1]]",
    ]
    for payload in payloads:
        assert check_expression(payload)
        with pytest.raises(ExpressionError):
            evaluate(payload, {})
        with pytest.raises(ExpressionError):
            run_script(f"x = {payload}", {})
        with pytest.raises(ExpressionError):
            SafeScriptEngine().environment.evaluate(payload, {})
    assert not sentinel.exists()


def test_python_eval_exec_compile_are_never_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python's code paths are never reached: only compile-to-AST is allowed."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("eval/exec must not be called")

    real_compile = builtins.compile

    def ast_only_compile(
        source: Any, filename: Any, mode: str, flags: int = 0, *args: Any, **kwargs: Any
    ) -> Any:
        if not flags & ast.PyCF_ONLY_AST:
            raise AssertionError("compile to code must not be called")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "compile", ast_only_compile)
    unique = time.perf_counter_ns()  # fresh texts, not served from the cache
    assert evaluate(f"amount * 2 + {unique} - {unique}", {"amount": 21}) == 42
    assert run_script(f"a = {unique}\nb = a - {unique} + 1", {}) == {
        "a": unique,
        "b": 1,
    }
    assert check_expression(f"__import__('os') or {unique}")


def test_attribute_message_is_actionable() -> None:
    [problem] = check_expression("applicant.address")
    assert (
        problem.message
        == "Attribute access 'applicant.address' is not allowed; use applicant[\"address\"] for nested data."
    )
    assert (problem.line, problem.column) == (1, 1)


def test_problem_messages_name_the_culprit() -> None:
    [problem] = check_expression("amount > 1 and eval('1')")
    assert "Function 'eval' is not available" in problem.message
    assert "len" in problem.message  # lists what is available
    assert (problem.line, problem.column) == (1, 16)
    [problem] = check_expression("len(x, y)")
    assert problem.message == "Function 'len' takes exactly 1 argument, got 2."
    [problem] = check_expression("_secret > 1")
    assert "must not start with '_'" in problem.message
    [problem] = check_expression("x > 9**9**9")
    assert "Exponent" in problem.message and problem.column == 5
    [problem] = check_expression("amount >")
    assert problem.message.startswith("Syntax error")
    [problem] = check_expression("x" * 2001)
    assert "too long" in problem.message


def test_positions_account_for_stripped_indentation() -> None:
    [problem] = check_expression("\n\n   amount.x > 1")
    assert (problem.line, problem.column) == (3, 4)
    [problem] = check_expression("  phí.x")  # column counts characters, not bytes
    assert (problem.line, problem.column) == (1, 3)


def test_check_results_are_cached_but_not_shared() -> None:
    first = check_expression("x.y")
    first.clear()
    assert len(check_expression("x.y")) == 1


def test_non_text_is_a_problem_not_a_crash() -> None:
    assert check_expression(None)  # type: ignore[arg-type]
    with pytest.raises(ExpressionError):
        evaluate(123, {})  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Run-time errors and limits
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data", "fragment"),
    [
        ("x > 1", {}, "Unknown field 'x' in expression 'x > 1'"),
        ('x["missing"]', {"x": {}}, "Key 'missing' not found"),
        ("x[5]", {"x": [1]}, "out of range"),
        ("x / y", {"x": 1, "y": 0}, "Division by zero"),
        ("x % y", {"x": 1, "y": 0}, "Division by zero"),
        ("x + 1", {"x": "a"}, "cannot combine text and integer"),
        ("x < 1", {"x": "a"}, "Type mismatch"),
        ("x % 2", {"x": "%s"}, "needs numbers"),  # no printf-style formatting
        ("a ** b", {"a": 2, "b": 1000}, "Exponent 1000 is too large"),
        ("a ** b", {"a": 10, "b": 31}, "too large"),
        ("a ** b", {"a": 1.5, "b": -101}, "Exponent"),
        ("a ** b", {"a": -8, "b": 0.5}, "not a real number"),
        ("a ** b", {"a": 1e300, "b": 2}, "too large"),
        ("x * y", {"x": "a", "y": 10**9}, "too long"),
        ("y * x", {"x": [1], "y": 10**9}, "too long"),
        ("x * y", {"x": 10**20, "y": 10**20}, "too large"),
        ("x + x", {"x": "a" * 6000}, "too long"),
        ("x + x", {"x": [0] * 6000}, "too long"),
        ("[x, x]", {"x": [[0] * 1000] * 60}, "too large"),
        ("int(x)", {"x": "1" * 5000}, "longer than"),
        ("int(x)", {"x": 1e300}, "too large"),
        ("int(x)", {"x": "abc"}, "cannot convert"),
        ("round(x, 100000)", {"x": 5}, "digits"),
        ("round(x)", {"x": float("inf")}, "infinite"),
        ("str(x)", {"x": [1, 2]}, "single value"),
        ("date(x)", {"x": "31/05/2024"}, "ISO date"),
        ("len(x)", {"x": 5}, "len() needs"),
        ("sum(x)", {"x": [1, "a"]}, "numbers"),
        ("min(x)", {"x": []}, "empty"),
        ("x[0]", {"x": 5}, "Cannot use [...]"),
        ("x is None", {"x": 1}, None),  # valid; evaluates to False
    ],
)
def test_evaluation_errors(
    text: str, data: dict[str, Any], fragment: str | None
) -> None:
    assert check_expression(text) == []
    started = time.perf_counter()
    if fragment is None:
        assert evaluate(text, data) is False
        return
    with pytest.raises(ExpressionError) as info:
        evaluate(text, data)
    assert fragment in str(info.value)
    assert info.value.expression == text
    assert time.perf_counter() - started < 10  # bounded, whatever the load (not a speed target)


def test_literal_runtime_limits_are_reported_at_check_time() -> None:
    for text in ["2 ** 1000", "'a' * 10**9", "10**30 * 10**30"]:
        assert check_expression(text)
        with pytest.raises(ExpressionError):
            evaluate(text, {})


def test_big_int_growth_in_script_is_stopped() -> None:
    script = "a = 10**30\nb = a * a"
    assert check_script(script) == []
    with pytest.raises(ExpressionError) as info:
        run_script(script, {})
    assert info.value.line == 2
    assert "line 2" in str(info.value)


def test_shared_structure_bombs_are_stopped() -> None:
    started = time.perf_counter()
    script = "a = [1] * 10000\nb = [a, a, a, a, a, a, a, a, a, a, a]\nc = [b] * 10000"
    assert check_script(script) == []
    with pytest.raises(ExpressionError, match="too large"):
        run_script(script, {})
    with pytest.raises(ExpressionError, match="too long|too large"):
        run_script("s = 'x' * 10000\nt = s + s", {})
    with pytest.raises(ExpressionError, match="too large"):
        run_script("x = 10**30\nx *= x", {})
    assert time.perf_counter() - started < 10  # bounded, whatever the load (not a speed target)


# --------------------------------------------------------------------------
# Scripts
# --------------------------------------------------------------------------


def test_run_script_returns_assignments_without_touching_data() -> None:
    data = {"amount": 150, "urgent": True}
    script = """
        # phí và tổng
        total = amount * 2
        fee = 50000 if urgent else 20000
        total += fee
        pass
        label = "Khẩn" if urgent else "Thường"
    """
    assert check_script(script) == []
    assert run_script(script, data) == {"total": 50300, "fee": 50000, "label": "Khẩn"}
    assert data == {"amount": 150, "urgent": True}


def test_run_script_later_lines_see_earlier_ones_and_can_shadow_data() -> None:
    assert run_script("amount = amount + 1\ndouble = amount * 2", {"amount": 1}) == {
        "amount": 2,
        "double": 4,
    }
    assert run_script("", {}) == {}


def test_run_script_errors_carry_the_line() -> None:
    with pytest.raises(ExpressionError) as info:
        run_script("a = 1\nb = missing + a", {})
    assert info.value.line == 2
    assert "Unknown field 'missing'" in str(info.value)
    with pytest.raises(ExpressionError, match="Unknown field 'n'"):
        run_script("n += 1", {})


@pytest.mark.parametrize(
    ("script", "line", "fragment"),
    [
        ("import os", 1, "'import' statements are not allowed"),
        ("from os import system", 1, "'import' statements are not allowed"),
        ("while True: pass", 1, "'while' loops are not allowed"),
        ("def f(): pass", 1, "Function definitions"),
        ("class A: pass", 1, "Class definitions"),
        ("a = 1\nfor i in x: pass", 2, "'for' loops"),
        ("a = 1\nif a:\n    b = 2", 2, "conditional expression"),
        ("with open('f') as f: pass", 1, "'with' statements"),
        ("try:\n    a = 1\nexcept Exception:\n    pass", 1, "'try' statements"),
        ("del x", 1, "'del' statements"),
        ("global x", 1, "'global' statements"),
        ("assert x", 1, "'assert' statements"),
        ("x", 1, "only compute a value"),
        ("print('hi')", 1, "only compute a value"),
        ("a = b = 1", 1, "one name per line"),
        ("a, b = 1, 2", 1, "Cannot assign"),
        ("x['k'] = 1", 1, "Cannot assign"),
        ("x.k = 1", 1, "Cannot assign"),
        ("_x = 1", 1, "must not start with '_'"),
        ("a: int = 1", 1, "Annotated"),
        ("a = 1\nb = a.real", 2, "Attribute access"),
        ("a <<= 1", 1, "Operator '<<'"),
        ("a = (", 1, "Syntax error"),
        ("x = 1\n" * 400, None, "too"),
    ],
)
def test_invalid_scripts(script: str, line: int | None, fragment: str) -> None:
    problems = check_script(script)
    assert problems
    assert fragment in problems[0].message
    assert problems[0].line == line
    with pytest.raises(ExpressionError):
        run_script(script, {"x": [1]})


# --------------------------------------------------------------------------
# Property-based tests
# --------------------------------------------------------------------------

HYPOTHESIS_DATA: dict[str, Any] = {
    "a": 3,
    "b": -2.5,
    "s": "Một Cửa",
    "l": [1, 2, [3]],
    "d": {"k": 1, "s": "x"},
    "n": None,
    "t": True,
    "big": 10**30,
}

TOKENS = [
    "a",
    "b",
    "s",
    "l",
    "d",
    "n",
    "t",
    "big",
    "zz",
    "_p",
    "__class__",
    "0",
    "1",
    "2",
    "-1",
    "100",
    "10**30",
    "9",
    "1e308",
    "0.5",
    "'x'",
    '"k"',
    "''",
    "True",
    "None",
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "**",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "and",
    "or",
    "not",
    "in",
    "is",
    "if",
    "else",
    "for",
    "lambda",
    ":",
    ":=",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "=",
    "*",
    "**",
    "~",
    "<<",
    "|",
    "len",
    "min",
    "max",
    "abs",
    "round",
    "int",
    "float",
    "str",
    "bool",
    "lower",
    "upper",
    "strip",
    "contains",
    "startswith",
    "endswith",
    "date",
    "days_between",
    "sum",
    "any",
    "all",
    "__import__",
    "eval",
    "open",
    "getattr",
    "type",
]

token_soup = st.lists(st.sampled_from(TOKENS), max_size=25).map(" ".join)

ATOMS = st.sampled_from(
    [
        "a",
        "b",
        "s",
        "l",
        "d",
        "n",
        "t",
        "big",
        "zz",
        "0",
        "1",
        "7",
        "-3",
        "2.5",
        "100",
        "10**30",
        "'x'",
        '"2024-05-31"',
        "True",
        "None",
        "[]",
        "[1, 2]",
        '{"k": 1}',
    ]
)
BINARY = st.sampled_from(
    ["+", "-", "*", "/", "//", "%", "**", "==", "<", ">=", "in", "and", "or"]
)
FUNCTION_NAMES = st.sampled_from(sorted(FUNCTIONS))


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, BINARY, children).map(lambda p: f"({p[0]} {p[1]} {p[2]})"),
        st.tuples(FUNCTION_NAMES, st.lists(children, min_size=1, max_size=2)).map(
            lambda p: f"{p[0]}({', '.join(p[1])})"
        ),
        st.tuples(children, children).map(lambda p: f"{p[0]}[{p[1]}]"),
        st.lists(children, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.tuples(children, children, children).map(
            lambda p: f"({p[0]} if {p[1]} else {p[2]})"
        ),
        children.map(lambda c: f"(not {c})"),
        children.map(lambda c: f"-{c}"),
    )


well_formed = st.recursive(ATOMS, _extend, max_leaves=12)


def _evaluate_safely(text: str) -> None:
    problems = check_expression(text)
    assert isinstance(problems, list)
    started = time.perf_counter()
    if problems:
        with pytest.raises(ExpressionError):
            evaluate(text, HYPOTHESIS_DATA)
    else:
        try:
            evaluate(text, HYPOTHESIS_DATA)
        except ExpressionError:
            pass
    assert time.perf_counter() - started < 10  # bounded, whatever the load (not a speed target)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text: str) -> None:
    _evaluate_safely(text)
    assert isinstance(check_script(text), list)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token_soup)
def test_token_soup_never_crashes(text: str) -> None:
    _evaluate_safely(text)
    assert isinstance(check_script("x = " + text), list)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(well_formed)
def test_generated_expressions_evaluate_or_fail_cleanly(text: str) -> None:
    _evaluate_safely(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["x", "y", "a"]), well_formed), max_size=5))
def test_generated_scripts_run_or_fail_cleanly(lines: list[tuple[str, str]]) -> None:
    script = "\n".join(f"{name} = {value}" for name, value in lines)
    data = dict(HYPOTHESIS_DATA)
    snapshot = repr(data)
    if check_script(script):
        with pytest.raises(ExpressionError):
            run_script(script, data)
    else:
        try:
            result = run_script(script, data)
            assert set(result) <= {"x", "y", "a"}
        except ExpressionError:
            pass
    assert repr(data) == snapshot


# --------------------------------------------------------------------------
# SpiffWorkflow integration
# --------------------------------------------------------------------------


def _bpmn(high: str, low: str, script: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" id="defs" targetNamespace="http://example.org/bpmn">
  <bpmn:process id="fee_check" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="compute"/>
    <bpmn:scriptTask id="compute">
      <bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing>
      <bpmn:script>{script}</bpmn:script>
    </bpmn:scriptTask>
    <bpmn:sequenceFlow id="f2" sourceRef="compute" targetRef="gateway"/>
    <bpmn:exclusiveGateway id="gateway">
      <bpmn:incoming>f2</bpmn:incoming><bpmn:outgoing>to_high</bpmn:outgoing><bpmn:outgoing>to_low</bpmn:outgoing>
    </bpmn:exclusiveGateway>
    <bpmn:sequenceFlow id="to_high" sourceRef="gateway" targetRef="end_high">
      <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">{high}</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="to_low" sourceRef="gateway" targetRef="end_low">
      <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">{low}</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:endEvent id="end_high"><bpmn:incoming>to_high</bpmn:incoming></bpmn:endEvent>
    <bpmn:endEvent id="end_low"><bpmn:incoming>to_low</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>
""".encode()


def _run_workflow(xml: bytes, data: dict[str, Any]) -> BpmnWorkflow:
    parser = BpmnParser()
    parser.add_bpmn_str(xml)
    workflow = BpmnWorkflow(
        parser.get_spec("fee_check"), script_engine=SafeScriptEngine()
    )
    [start] = workflow.get_tasks(state=TaskState.READY)
    start.data.update(data)
    workflow.do_engine_steps()
    return workflow


def _completed(workflow: BpmnWorkflow) -> set[str]:
    return {
        task.task_spec.name for task in workflow.get_tasks(state=TaskState.COMPLETED)
    }


@pytest.mark.parametrize(
    ("amount", "end", "total"),
    [(150, "end_high", 300), (100, "end_low", 200), (7, "end_low", 14)],
)
def test_engine_routes_with_safe_conditions(amount: int, end: str, total: int) -> None:
    workflow = _run_workflow(
        _bpmn("amount &gt; 100", "amount &lt;= 100", "total = amount * 2"),
        {"amount": amount},
    )
    assert workflow.is_completed()
    assert end in _completed(workflow)
    assert ({"end_high", "end_low"} - {end}).isdisjoint(_completed(workflow))
    assert workflow.data["total"] == total


def test_engine_refuses_hostile_condition(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    xml = _bpmn(
        f"__import__('os').system('touch {sentinel}')",
        "amount &lt;= 100",
        "total = amount * 2",
    )
    with pytest.raises(WorkflowTaskException) as info:
        _run_workflow(xml, {"amount": 5})
    assert isinstance(info.value.__cause__, ExpressionError)
    assert not sentinel.exists()


def test_engine_refuses_hostile_script(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    xml = _bpmn(
        "amount &gt; 100",
        "amount &lt;= 100",
        f"import os\nos.system('touch {sentinel}')",
    )
    with pytest.raises(WorkflowTaskException):
        _run_workflow(xml, {"amount": 5})
    xml = _bpmn("amount &gt; 100", "amount &lt;= 100", "total = amount\nx = missing")
    with pytest.raises(WorkflowTaskException) as info:
        _run_workflow(xml, {"amount": 5})
    assert info.value.line_number == 2
    assert not sentinel.exists()


def test_engine_validate_evaluate_and_services() -> None:
    engine = SafeScriptEngine()
    engine.validate("amount > 1")
    with pytest.raises(ExpressionError):
        engine.validate("amount.x > 1")
    with pytest.raises(
        SyntaxError
    ):  # unparsable text is also a SyntaxError (DMN relies on it)
        engine.validate("> 5")
    task = SimpleNamespace(data={"urgent": True})
    assert engine.evaluate(task, "'PT4H' if urgent else 'P3D'") == "PT4H"
    assert engine.evaluate(task, "urgent and flag", external_context={"flag": 1}) == 1
    assert engine.execute(task, "x = 2") is True
    assert task.data == {"urgent": True, "x": 2}
    # The environment is safe too: SpiffWorkflow calls it directly for some conditions.
    with pytest.raises(ExpressionError):
        engine.environment.evaluate("__import__('os')", {})
    assert engine.environment.evaluate("a + b", {"a": 1}, {"b": 2}) == 3
