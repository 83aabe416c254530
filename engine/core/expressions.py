"""Safe expression language for BPMN conditions, timers and script tasks.

Uploaded BPMN diagrams are untrusted.  Every piece of text taken from a
diagram -- sequence-flow conditions, timer expressions, script-task scripts --
is evaluated **only** through this module.  It is never handed to Python's
``eval``, ``exec`` or ``compile``.  Text is checked statically when a diagram is
deployed (:func:`check_expression`, :func:`check_script`) and checked again,
then evaluated by a confined evaluator, when the process runs
(:func:`evaluate`, :func:`run_script`, :class:`SafeScriptEngine`).

Language reference
==================

The language uses Python expression syntax, restricted to the following.

Values
------
* Literals: text ``"abc"`` / ``'abc'``, integers ``42``, decimals ``2.5``,
  ``True``, ``False``, ``None``.  Integer literals must lie within
  ``±10**30``.  (Bytes, complex numbers and ``...`` are not supported.)
* Lists ``[1, 2, 3]`` and tuples ``(1, 2)`` of expressions; dictionaries
  ``{"key": value}`` whose keys are text literals.
* Field names refer to the dossier (task) data: ``amount``, ``applicant``,
  ``phí_lệ_phí``.  Names starting with ``_`` are not allowed.  A field that
  does not exist is an evaluation error.
* Nested data is read with brackets: ``applicant["address"]["province"]``,
  ``documents[0]``, ``items[i]``.  Slices (``x[1:3]``) are not supported.
  Attribute access (``applicant.address``) is **not** allowed.

Operators
---------
* Logic: ``and``, ``or``, ``not``.
* Comparison: ``==  !=  <  <=  >  >=  in  not in`` (chains such as
  ``0 < x <= 10`` work); ``is`` / ``is not`` only as ``x is None`` /
  ``x is not None``.
* Arithmetic: ``+  -  *  /  //  %  **`` and unary ``-`` / ``+``.
  ``+`` also joins two texts or two lists; ``*`` repeats a text or list by an
  integer; ``%`` is the numeric remainder only (no text formatting).
* Conditional: ``value_if_true if condition else value_if_false``.

Functions
---------
Only these functions can be called, by name, with positional arguments:

============================  ==================================================
``len(x)``                    length of a text, list or dictionary
``min(a, b, ...)``            smallest argument, or smallest item of one list
``max(a, b, ...)``            largest argument, or largest item of one list
``abs(n)``                    absolute value
``round(n)``                  round to an integer; ``round(n, digits)`` keeps
                              ``digits`` decimals (``|digits| <= 30``)
``int(x)``                    integer from a number or a text such as ``"42"``
``float(x)``                  decimal number from a number or a text
``str(x)``                    text of a single value (text, number, boolean,
                              None, date -> ISO ``YYYY-MM-DD``)
``bool(x)``                   truth value
``lower(s)``, ``upper(s)``    lower / upper case of a text
``strip(s)``                  text without surrounding white space
``contains(h, n)``            ``True`` if text ``h`` contains text ``n``, or list /
                              dictionary ``h`` contains item / key ``n``
``startswith(s, p)``          ``True`` if text ``s`` starts with ``p``
``endswith(s, p)``            ``True`` if text ``s`` ends with ``p``
``date(x)``                   a date from an ISO text ``"2024-05-31"`` (a time
                              part such as ``"2024-05-31T08:00:00"`` is ignored)
``days_between(d1, d2)``      calendar days from ``d1`` to ``d2`` (``d2 - d1``,
                              negative if ``d2`` is earlier); ISO texts or dates
``sum(values)``               total of a list of numbers
``any(values)``               ``True`` if any item of a list is true
``all(values)``               ``True`` if every item of a list is true
============================  ==================================================

Functions and fields live in separate name spaces: ``len(x)`` calls the
function, a bare ``len`` would be a field called ``len``.  Functions cannot be
stored, passed around or called indirectly (``f()()``, ``x["a"]()``).

Not supported (rejected with a message)
---------------------------------------
Attribute access ``a.b``, method calls ``s.upper()``, ``lambda``,
comprehensions and generator expressions, f-strings, ``:=``, ``*`` / ``**``
unpacking, keyword arguments, set literals, slices, bit operators
(``& | ^ ~ << >>``), ``await`` / ``yield``, and any function not listed above
(``__import__``, ``eval``, ``open``, ``getattr``, ``type``, ...).

Scripts (script tasks)
----------------------
A script is a sequence of lines, each one of:

* ``name = expression`` -- stores a value in the dossier data;
* ``name += expression`` (also ``-= *= /= //= %= **=``);
* ``pass``.

Later lines see the values assigned by earlier ones.  Everything else
(``import``, ``def``, ``class``, ``if``, ``for``, ``while``, ``with``, ``try``,
``del``, ``global``, ``assert``, ``return``, bare expressions, assignments to
``x["key"]`` or to several names at once) is rejected with its line number.
Common indentation of the whole script is ignored.

Limits
------
* Text: at most 2,000 characters (surrounding white space / common
  indentation not counted); at most 500 syntax elements; nesting at most 50
  levels deep.
* Integers: every arithmetic result must lie within ``±10**30``.
* ``**``: the exponent must be at most 100 in magnitude and the result must
  respect the integer limit.
* Texts and lists built with ``+`` or ``*``: at most 10,000 characters /
  items.  Any list, tuple or dictionary built by an expression may hold at
  most 100,000 values in total, counting nested values and text characters.

A calculation made only of literals (``2 ** 1000``, ``"a" * 10**9``,
``1 / 0``) is computed when the text is checked, so such mistakes are
reported at deploy time.  Otherwise breaking a limit, an unknown field, a missing key, a type mismatch or a
division by zero raises :class:`ExpressionError` at run time.

Examples
--------
Conditions::

    approved == True and fee <= 500000
    len(documents) >= 2
    applicant["age"] >= 18 or guardian is not None
    contains(["HN", "HCM"], province) and not urgent
    days_between(submitted_on, date("2024-12-31")) > 15

Timer (ISO 8601 duration or date-time as a text)::

    "P3D"
    "PT4H" if urgent else "P5D"

Script::

    total = amount * 2
    fee = 50000 if urgent else 20000
    total += fee
"""

from __future__ import annotations

import ast
import datetime as _dt
import functools
import math
import textwrap
import types
from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import simpleeval
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.script_engine.python_environment import (
    BasePythonScriptEngineEnvironment,
)

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_INT",
    "MAX_NODES",
    "MAX_SEQUENCE_LENGTH",
    "MAX_TEXT_LENGTH",
    "MAX_VALUE_SIZE",
    "ExpressionError",
    "ExpressionProblem",
    "SafeScriptEngine",
    "check_expression",
    "check_script",
    "evaluate",
    "run_script",
]

# --------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------

MAX_TEXT_LENGTH: int = 2_000
"""Maximum length of an expression or script (without surrounding white space)."""
MAX_NODES: int = 500
"""Maximum number of syntax elements in one expression or script."""
MAX_DEPTH: int = 50
"""Maximum nesting depth of the syntax tree."""
MAX_INT: int = 10**30
"""Largest integer magnitude a literal or an arithmetic result may have."""
MAX_EXPONENT: int = 100
"""Largest magnitude of the right operand of ``**``."""
MAX_SEQUENCE_LENGTH: int = 10_000
"""Longest text or list that ``+`` and ``*`` may produce."""
MAX_VALUE_SIZE: int = 100_000
"""Largest total size (nested values and text characters) of a built value."""

_MAX_RAW_LENGTH = (
    5 * MAX_TEXT_LENGTH
)  # longer raw text is refused before any processing
_MAX_CONVERSION_LENGTH = 100  # longest text int()/float()/date() will convert
_MAX_ROUND_DIGITS = 30
_MAX_PROBLEMS = 20
_SNIPPET_LENGTH = 80

# --------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpressionProblem:
    """A reason why an expression or script is not valid.

    ``message`` is a plain English sentence a process designer can act on;
    ``line`` and ``column`` are 1-based positions within the text (``None``
    when unknown).
    """

    message: str
    line: int | None = None
    column: int | None = None


class ExpressionError(Exception):
    """An expression or script could not be evaluated.

    Raised for invalid text (``problems`` is then non-empty) and for run-time
    failures: unknown field, missing key, type mismatch, a limit exceeded,
    division by zero.  ``expression`` is the text concerned; ``line`` is the
    1-based line of a script where the failure happened, if known.
    """

    def __init__(
        self,
        message: str,
        expression: str = "",
        *,
        problems: Sequence[ExpressionProblem] = (),
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message: str = message
        self.expression: str = expression
        self.problems: tuple[ExpressionProblem, ...] = tuple(problems)
        self.line: int | None = line

    def __str__(self) -> str:
        return self.message


class _ExpressionSyntaxError(ExpressionError, SyntaxError):
    """Invalid text that does not even parse.

    Also a :class:`SyntaxError`, because SpiffWorkflow's DMN engine probes
    ``script_engine.validate`` and expects ``SyntaxError`` for such text.
    """


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


class _Failure(Exception):
    """Internal: an evaluation failure with a designer-readable reason."""


def _type_name(value: object) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "dictionary"
    if isinstance(value, _dt.datetime):
        return "date-time"
    if isinstance(value, _dt.date):
        return "date"
    return type(value).__name__


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float))


def _shorten(text: str, limit: int = _SNIPPET_LENGTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_int(value: Any) -> Any:
    """Raise if ``value`` is an integer beyond the integer limit."""
    if isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
        raise _Failure("Number is too large (the limit is 10**30)")
    if isinstance(value, complex):  # e.g. (-8) ** 0.5
        raise _Failure("Result is not a real number")
    return value


# --------------------------------------------------------------------------
# Whitelisted functions
# --------------------------------------------------------------------------


def _need_text(func: str, value: object) -> str:
    if not isinstance(value, str):
        raise _Failure(f"{func}() needs a text, got {_type_name(value)}")
    return value


def _need_list(func: str, value: object) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise _Failure(f"{func}() needs a list, got {_type_name(value)}")
    return value


def _need_number(func: str, value: object) -> int | float:
    if not _is_number(value):
        raise _Failure(f"{func}() needs a number, got {_type_name(value)}")
    return value  # type: ignore[return-value]


def _fn_len(value: Any) -> int:
    if isinstance(value, (str, list, tuple, Mapping)):
        return len(value)
    raise _Failure(
        f"len() needs a text, a list or a dictionary, got {_type_name(value)}"
    )


def _extremum(func: str, chooser: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    values: Sequence[Any] = args
    if len(args) == 1:
        values = _need_list(func, args[0])
    if not values:
        raise _Failure(f"{func}() of an empty list")
    try:
        return chooser(values)
    except TypeError:
        raise _Failure(f"{func}() cannot compare values of different types") from None


def _fn_min(*args: Any) -> Any:
    return _extremum("min", min, args)


def _fn_max(*args: Any) -> Any:
    return _extremum("max", max, args)


def _fn_abs(value: Any) -> int | float:
    return abs(_need_number("abs", value))


def _fn_round(value: Any, digits: Any = None) -> int | float:
    number = _need_number("round", value)
    if digits is None:
        if isinstance(number, float) and not math.isfinite(number):
            raise _Failure("round() cannot round an infinite or undefined number")
        return _check_int(round(number))
    if not isinstance(digits, int) or abs(digits) > _MAX_ROUND_DIGITS:
        raise _Failure(
            f"round() needs a whole number of digits between -{_MAX_ROUND_DIGITS} and {_MAX_ROUND_DIGITS}"
        )
    return _check_int(round(number, digits))


def _conversion_text(func: str, value: str) -> str:
    text = value.strip()
    if len(text) > _MAX_CONVERSION_LENGTH:
        raise _Failure(
            f"{func}() cannot convert a text longer than {_MAX_CONVERSION_LENGTH} characters"
        )
    return text


def _fn_int(value: Any) -> int:
    if isinstance(value, str):
        text = _conversion_text("int", value)
        try:
            return _check_int(int(text))
        except ValueError:
            raise _Failure(
                f"int() cannot convert {_shorten(repr(text), 40)} to an integer"
            ) from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Failure("int() cannot convert an infinite or undefined number")
        return _check_int(int(value))
    if isinstance(value, int):
        return _check_int(int(value))
    raise _Failure(f"int() needs a number or a text, got {_type_name(value)}")


def _fn_float(value: Any) -> float:
    if isinstance(value, str):
        text = _conversion_text("float", value)
        try:
            return float(text)
        except ValueError:
            raise _Failure(
                f"float() cannot convert {_shorten(repr(text), 40)} to a number"
            ) from None
    if _is_number(value):
        try:
            return float(value)
        except OverflowError:
            raise _Failure("float() result is too large") from None
    raise _Failure(f"float() needs a number or a text, got {_type_name(value)}")


def _fn_str(value: Any) -> str:
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float)):
        return str(value)
    raise _Failure(
        f"str() needs a single value (text, number, boolean, date), got {_type_name(value)}"
    )


def _fn_bool(value: Any) -> bool:
    return bool(value)


def _fn_lower(value: Any) -> str:
    return _need_text("lower", value).lower()


def _fn_upper(value: Any) -> str:
    return _need_text("upper", value).upper()


def _fn_strip(value: Any) -> str:
    return _need_text("strip", value).strip()


def _fn_contains(haystack: Any, needle: Any) -> bool:
    if isinstance(haystack, str):
        return _need_text("contains", needle) in haystack
    if isinstance(haystack, (list, tuple, Mapping)):
        try:
            return needle in haystack
        except TypeError:  # unhashable key for a dictionary
            return False
    raise _Failure(
        f"contains() needs a text, a list or a dictionary first, got {_type_name(haystack)}"
    )


def _fn_startswith(value: Any, prefix: Any) -> bool:
    return _need_text("startswith", value).startswith(_need_text("startswith", prefix))


def _fn_endswith(value: Any, suffix: Any) -> bool:
    return _need_text("endswith", value).endswith(_need_text("endswith", suffix))


def _to_date(func: str, value: Any) -> _dt.date:
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, str):
        text = _conversion_text(func, value)
        try:
            return _dt.date.fromisoformat(text)
        except ValueError:
            pass
        try:
            return _dt.datetime.fromisoformat(text).date()
        except ValueError:
            raise _Failure(
                f'{func}() needs an ISO date such as "2024-05-31", got {_shorten(repr(text), 40)}'
            ) from None
    raise _Failure(
        f"{func}() needs a date or an ISO date text, got {_type_name(value)}"
    )


def _fn_date(value: Any) -> _dt.date:
    return _to_date("date", value)


def _fn_days_between(start: Any, end: Any) -> int:
    return (_to_date("days_between", end) - _to_date("days_between", start)).days


def _fn_sum(values: Any) -> int | float:
    items = _need_list("sum", values)
    for item in items:
        if not _is_number(item):
            raise _Failure(f"sum() needs a list of numbers, found {_type_name(item)}")
    return _check_int(sum(items))


def _fn_any(values: Any) -> bool:
    return any(_need_list("any", values))


def _fn_all(values: Any) -> bool:
    return all(_need_list("all", values))


# name -> (function, minimum arguments, maximum arguments or None for "any")
_FUNCTION_TABLE: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "len": (_fn_len, 1, 1),
    "min": (_fn_min, 1, None),
    "max": (_fn_max, 1, None),
    "abs": (_fn_abs, 1, 1),
    "round": (_fn_round, 1, 2),
    "int": (_fn_int, 1, 1),
    "float": (_fn_float, 1, 1),
    "str": (_fn_str, 1, 1),
    "bool": (_fn_bool, 1, 1),
    "lower": (_fn_lower, 1, 1),
    "upper": (_fn_upper, 1, 1),
    "strip": (_fn_strip, 1, 1),
    "contains": (_fn_contains, 2, 2),
    "startswith": (_fn_startswith, 2, 2),
    "endswith": (_fn_endswith, 2, 2),
    "date": (_fn_date, 1, 1),
    "days_between": (_fn_days_between, 2, 2),
    "sum": (_fn_sum, 1, 1),
    "any": (_fn_any, 1, 1),
    "all": (_fn_all, 1, 1),
}

FUNCTIONS: Mapping[str, Callable[..., Any]] = types.MappingProxyType(
    {name: entry[0] for name, entry in _FUNCTION_TABLE.items()}
)
"""The functions an expression may call, by name (read-only)."""

_FUNCTION_LIST = ", ".join(sorted(FUNCTIONS))

# --------------------------------------------------------------------------
# Static checking
# --------------------------------------------------------------------------

_BIN_OPS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}
_REJECTED_BIN_OPS: dict[type[ast.operator], str] = {
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.MatMult: "@",
}
_CMP_OPS: tuple[type[ast.cmpop], ...] = (
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
)
_UNARY_OPS: tuple[type[ast.unaryop], ...] = (ast.Not, ast.USub, ast.UAdd)
# Leaf helper nodes that are not counted as syntax elements.
_UNCOUNTED = (ast.expr_context, ast.operator, ast.boolop, ast.unaryop, ast.cmpop)

_REJECTED_EXPRESSIONS: dict[type[ast.AST], str] = {
    ast.Lambda: "Lambda functions ('lambda') are not allowed",
    ast.ListComp: "List comprehensions are not allowed",
    ast.SetComp: "Set comprehensions are not allowed",
    ast.DictComp: "Dictionary comprehensions are not allowed",
    ast.GeneratorExp: "Generator expressions are not allowed",
    ast.JoinedStr: "f-strings are not allowed; join texts with '+' and str(...)",
    ast.FormattedValue: "f-strings are not allowed; join texts with '+' and str(...)",
    ast.NamedExpr: "Assignment expressions (':=') are not allowed",
    ast.Starred: "Unpacking with '*' is not allowed",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield from' is not allowed",
    ast.Set: "Set literals ('{a, b}') are not supported; use a list '[a, b]'",
    ast.Slice: "Slices ('x[a:b]') are not supported; use an index such as x[0]",
}

_STATEMENT_NAMES: dict[type[ast.AST], str] = {
    ast.Import: "'import' statements",
    ast.ImportFrom: "'import' statements",
    ast.FunctionDef: "Function definitions ('def')",
    ast.AsyncFunctionDef: "Function definitions ('async def')",
    ast.ClassDef: "Class definitions ('class')",
    ast.Return: "'return' statements",
    ast.Delete: "'del' statements",
    ast.For: "'for' loops",
    ast.AsyncFor: "'for' loops",
    ast.While: "'while' loops",
    ast.If: "'if' statements",
    ast.With: "'with' statements",
    ast.AsyncWith: "'with' statements",
    ast.Match: "'match' statements",
    ast.Raise: "'raise' statements",
    ast.Try: "'try' statements",
    ast.Assert: "'assert' statements",
    ast.Global: "'global' statements",
    ast.Nonlocal: "'nonlocal' statements",
    ast.Break: "'break' statements",
    ast.Continue: "'continue' statements",
    ast.AnnAssign: "Annotated assignments ('name: type = value')",
    ast.Expr: "Lines that only compute a value",
}
if hasattr(ast, "TryStar"):  # Python 3.11+
    _STATEMENT_NAMES[ast.TryStar] = "'try' statements"
_STATEMENT_HINTS: dict[type[ast.AST], str] = {
    ast.If: "; use a conditional expression 'name = a if condition else b'",
}


@dataclass(frozen=True)
class _Analysis:
    """Result of checking a text: the parsed tree (when valid) and problems."""

    tree: ast.AST | None
    problems: tuple[ExpressionProblem, ...]
    syntax_error: bool = False


class _Source:
    """The normalised text and how to map its positions back to the original."""

    def __init__(self, text: str, mode: Literal["eval", "exec"]) -> None:
        if mode == "eval":
            self.code = text.strip()
            leading = text[: len(text) - len(text.lstrip())]
            self.line_shift = leading.count("\n")
            self.first_line_column_shift = len(leading) - (leading.rfind("\n") + 1)
            self.column_shift = 0
        else:
            self.code = textwrap.dedent(text)
            self.line_shift = 0
            self.first_line_column_shift = 0
            self.column_shift = 0
            for original, dedented in zip(text.splitlines(), self.code.splitlines()):
                if original.strip():
                    self.column_shift = len(original) - len(dedented)
                    break
        self.lines = self.code.splitlines()

    def position(
        self, line: int | None, column: int | None
    ) -> tuple[int | None, int | None]:
        """Map a 1-based (line, character column) in ``code`` to the original text."""
        if line is None:
            return None, None
        if column is not None:
            column += self.column_shift + (
                self.first_line_column_shift if line == 1 else 0
            )
        return line + self.line_shift, column

    def node_position(self, node: ast.AST) -> tuple[int | None, int | None]:
        line = getattr(node, "lineno", None)
        byte_offset = getattr(node, "col_offset", None)
        if line is None:
            return None, None
        column: int | None = None
        if byte_offset is not None and 1 <= line <= len(self.lines):
            # ast column offsets count UTF-8 bytes; convert to characters.
            prefix = self.lines[line - 1].encode("utf-8")[:byte_offset]
            column = len(prefix.decode("utf-8", errors="ignore")) + 1
        return self.position(line, column)


def _snippet(node: ast.AST) -> str:
    try:
        return _shorten(ast.unparse(node))
    except (
        ValueError,
        TypeError,
        AttributeError,
        RecursionError,
    ):  # pragma: no cover - defensive
        return "..."


class _Checker:
    """Walks a parsed tree (already known to be small and shallow)."""

    def __init__(self, source: _Source) -> None:
        self.source = source
        self.problems: list[ExpressionProblem] = []
        self.folding = False  # inside a constant calculation already evaluated

    def fold(self, node: ast.expr) -> None:
        """Evaluate a calculation made only of literals, to report limits early.

        ``9**9**9**9``, ``"a" * 10**9`` or ``1 / 0`` can be rejected at deploy
        time.  The calculation runs in the same confined evaluator as at run
        time (with no data), so it is bounded by the same limits.
        """
        problems_before = len(self.problems)
        self.folding = True
        try:
            self.check_expr(node)
        finally:
            self.folding = False
        if len(self.problems) != problems_before:
            return  # structural problems already reported; do not evaluate
        try:
            _evaluate_node(_Evaluator({}), node, "")
        except _Failure as err:
            self.report(
                node, f"The calculation '{_snippet(node)}' cannot be done: {err}"
            )

    def report(self, node: ast.AST | None, message: str) -> None:
        line, column = (
            self.source.node_position(node) if node is not None else (None, None)
        )
        problem = ExpressionProblem(
            message if message.endswith(".") else message + ".", line, column
        )
        if problem not in self.problems and len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(problem)

    # -- statements ---------------------------------------------------------

    def check_module(self, module: ast.Module) -> None:
        for statement in module.body:
            self.check_statement(statement)

    def check_statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Pass):
            return
        if isinstance(node, ast.Assign):
            if len(node.targets) != 1:
                self.report(
                    node,
                    "Assign one name per line ('a = value'); chained assignments 'a = b = value' are not allowed",
                )
            for target in node.targets:
                self.check_target(target)
            self.check_expr(node.value)
            return
        if isinstance(node, ast.AugAssign):
            self.check_target(node.target)
            self.check_operator(node, node.op)
            self.check_expr(node.value)
            return
        description = _STATEMENT_NAMES.get(
            type(node), f"'{type(node).__name__}' statements"
        )
        hint = _STATEMENT_HINTS.get(
            type(node), "; each line must be an assignment 'name = expression'"
        )
        self.report(node, f"{description} are not allowed in a script{hint}")

    def check_target(self, target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            if target.id.startswith("_"):
                self.report(
                    target,
                    f"Name '{target.id}' is not allowed; names must not start with '_'",
                )
            return
        self.report(
            target,
            f"Cannot assign to '{_snippet(target)}'; only simple assignments 'name = expression' are allowed",
        )

    # -- expressions --------------------------------------------------------

    def check_operator(self, node: ast.AST, op: ast.operator) -> None:
        if type(op) in _BIN_OPS:
            return
        symbol = _REJECTED_BIN_OPS.get(type(op), type(op).__name__)
        self.report(node, f"Operator '{symbol}' is not allowed")

    def check_expr(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, int) and not isinstance(value, bool):
                if abs(value) > MAX_INT:
                    self.report(
                        node, "Number literal is too large (the limit is 10**30)"
                    )
            elif not (value is None or isinstance(value, (bool, str, float))):
                if isinstance(value, bytes):
                    kind = "Byte strings (b'...') are"
                elif isinstance(value, complex):
                    kind = "Complex numbers are"
                else:
                    kind = f"The literal '{_snippet(node)}' is"
                self.report(node, f"{kind} not supported")
            return
        if isinstance(node, ast.Name):
            if node.id.startswith("_"):
                self.report(
                    node,
                    f"Name '{node.id}' is not allowed; names must not start with '_'",
                )
            return
        if isinstance(node, (ast.List, ast.Tuple)):
            for element in node.elts:
                self.check_expr(element)
            return
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if key is None:
                    self.report(value, "Unpacking with '**' is not allowed")
                elif not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                    self.report(
                        key, 'Dictionary keys must be text literals such as "name"'
                    )
                self.check_expr(value)
            return
        if isinstance(node, ast.Subscript):
            self.check_expr(node.value)
            self.check_expr(node.slice)
            return
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                self.report(
                    node,
                    f"Access to the internal attribute '{node.attr}' is not allowed",
                )
            else:
                base = _snippet(node.value)
                self.report(
                    node,
                    f"Attribute access '{_snippet(node)}' is not allowed; use {base}[\"{node.attr}\"] for nested data",
                )
            self.check_expr(node.value)
            return
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self.check_expr(value)
            return
        if (
            isinstance(node, (ast.UnaryOp, ast.BinOp))
            and not self.folding
            and _is_constant(node)
        ):
            self.fold(node)
            return
        if isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, _UNARY_OPS):
                self.report(node, "Operator '~' is not allowed")
            self.check_expr(node.operand)
            return
        if isinstance(node, ast.BinOp):
            self.check_operator(node, node.op)
            self.check_expr(node.left)
            self.check_expr(node.right)
            return
        if isinstance(node, ast.Compare):
            self.check_expr(node.left)
            for op, comparator in zip(node.ops, node.comparators):
                if isinstance(op, (ast.Is, ast.IsNot)):
                    if not (
                        isinstance(comparator, ast.Constant)
                        and comparator.value is None
                    ):
                        self.report(
                            node,
                            "'is' and 'is not' may only be used as 'x is None' / 'x is not None'; use '==' or '!=' otherwise",
                        )
                elif not isinstance(
                    op, _CMP_OPS
                ):  # pragma: no cover - all cmpops are handled
                    self.report(
                        node, f"Comparison '{type(op).__name__}' is not allowed"
                    )
                self.check_expr(comparator)
            return
        if isinstance(node, ast.IfExp):
            self.check_expr(node.test)
            self.check_expr(node.body)
            self.check_expr(node.orelse)
            return
        if isinstance(node, ast.Call):
            self.check_call(node)
            return
        message = _REJECTED_EXPRESSIONS.get(type(node))
        if message is None:
            message = f"'{type(node).__name__}' is not allowed in expressions"
        self.report(node, message)

    def check_call(self, node: ast.Call) -> None:
        func = node.func
        if not isinstance(func, ast.Name):
            if isinstance(func, ast.Attribute):
                self.report(
                    node,
                    f"Method calls such as '{_snippet(node)}' are not allowed; use the functions {_FUNCTION_LIST}",
                )
            elif isinstance(func, ast.Lambda):
                self.report(node, "Lambda functions ('lambda') are not allowed")
            else:
                self.report(
                    node,
                    f"Only functions named directly can be called (e.g. len(x)); '{_snippet(node)}' is not allowed",
                )
            if not isinstance(func, ast.Lambda):
                self.check_expr(func)
        elif func.id not in _FUNCTION_TABLE:
            self.report(
                node,
                f"Function '{func.id}' is not available; the functions you can use are {_FUNCTION_LIST}",
            )
        else:
            _, minimum, maximum = _FUNCTION_TABLE[func.id]
            count = len(node.args)
            if count < minimum or (maximum is not None and count > maximum):
                if maximum is None:
                    expected = (
                        f"at least {minimum} argument{'s' if minimum != 1 else ''}"
                    )
                elif minimum == maximum:
                    expected = (
                        f"exactly {minimum} argument{'s' if minimum != 1 else ''}"
                    )
                else:
                    expected = f"{minimum} to {maximum} arguments"
                if not node.keywords and not any(
                    isinstance(a, ast.Starred) for a in node.args
                ):
                    self.report(
                        node, f"Function '{func.id}' takes {expected}, got {count}"
                    )
        if node.keywords:
            self.report(
                node,
                f"Keyword arguments are not allowed in '{_snippet(node)}'; pass arguments by position",
            )
            for keyword in node.keywords:
                self.check_expr(keyword.value)
        for argument in node.args:
            self.check_expr(argument)


def _is_constant(node: ast.AST) -> bool:
    """True if ``node`` is a calculation over literals only (no fields, no calls)."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp):
        return _is_constant(node.operand)
    if isinstance(node, ast.BinOp):
        return _is_constant(node.left) and _is_constant(node.right)
    if isinstance(node, (ast.List, ast.Tuple)):
        return all(_is_constant(element) for element in node.elts)
    return False


def _size_problem(tree: ast.AST, source: _Source) -> ExpressionProblem | None:
    """Check node count and nesting depth without recursion."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, _UNCOUNTED):
            continue
        if depth > MAX_DEPTH:
            line, column = source.node_position(node)
            return ExpressionProblem(
                f"The text is nested too deeply (more than {MAX_DEPTH} levels); simplify it or split it into several steps.",
                line,
                column,
            )
        count += 1
        if count > MAX_NODES:
            return ExpressionProblem(
                f"The text is too complex (more than {MAX_NODES} elements); split it into several steps.",
                None,
                None,
            )
        for child in ast.iter_child_nodes(node):
            stack.append((child, depth + 1))
    return None


def _too_long(length: int) -> ExpressionProblem:
    return ExpressionProblem(
        f"The text is too long ({length:,} characters; the maximum is {MAX_TEXT_LENGTH:,}).",
        None,
        None,
    )


@functools.lru_cache(maxsize=2048)
def _analyse_cached(text: str, mode: Literal["eval", "exec"]) -> _Analysis:
    source = _Source(text, mode)
    code = source.code
    if len(code) > MAX_TEXT_LENGTH:
        return _Analysis(None, (_too_long(len(code)),))
    if mode == "eval" and not code:
        return _Analysis(
            None,
            (ExpressionProblem("The expression is empty.", None, None),),
            syntax_error=True,
        )
    try:
        tree = ast.parse(code, mode=mode)
    except SyntaxError as err:
        line, column = source.position(err.lineno, err.offset)
        reason = err.msg or "invalid syntax"
        return _Analysis(
            None,
            (ExpressionProblem(f"Syntax error: {reason}.", line, column),),
            syntax_error=True,
        )
    except (ValueError, TypeError) as err:  # e.g. NUL characters
        return _Analysis(
            None,
            (ExpressionProblem(f"Syntax error: {err}.", None, None),),
            syntax_error=True,
        )
    except (RecursionError, MemoryError, OverflowError):
        return _Analysis(
            None,
            (
                ExpressionProblem(
                    f"The text is nested too deeply (more than {MAX_DEPTH} levels); simplify it.",
                    None,
                    None,
                ),
            ),
        )
    problem = _size_problem(tree, source)
    if problem is not None:
        return _Analysis(None, (problem,))
    checker = _Checker(source)
    if isinstance(tree, ast.Expression):
        checker.check_expr(tree.body)
    else:
        assert isinstance(tree, ast.Module)
        checker.check_module(tree)
    if checker.problems:
        return _Analysis(None, tuple(checker.problems))
    return _Analysis(tree, ())


def _analyse(text: object, mode: Literal["eval", "exec"]) -> _Analysis:
    if not isinstance(text, str):
        return _Analysis(
            None,
            (
                ExpressionProblem(
                    f"Expected a text, got {type(text).__name__}.", None, None
                ),
            ),
        )
    if (
        len(text) > _MAX_RAW_LENGTH
    ):  # refuse early; do not fill the cache with huge texts
        return _Analysis(None, (_too_long(len(text)),))
    try:
        return _analyse_cached(text, mode)
    except (RecursionError, MemoryError):  # pragma: no cover - defensive
        return _Analysis(
            None, (ExpressionProblem("The text is too complex to check.", None, None),)
        )


def check_expression(text: str) -> list[ExpressionProblem]:
    """Check an expression statically; return its problems (``[]`` when valid)."""
    return list(_analyse(text, "eval").problems)


def check_script(text: str) -> list[ExpressionProblem]:
    """Check a script statically; return its problems (``[]`` when valid)."""
    return list(_analyse(text, "exec").problems)


def _invalid(text: str, analysis: _Analysis, kind: str) -> ExpressionError:
    first = analysis.problems[0]
    where = (
        f" (line {first.line})"
        if first.line is not None and "\n" in text.strip()
        else ""
    )
    more = (
        f" ({len(analysis.problems) - 1} more problem(s))"
        if len(analysis.problems) > 1
        else ""
    )
    message = f"Invalid {kind} '{_shorten(str(text))}'{where}: {first.message}{more}"
    error_class = _ExpressionSyntaxError if analysis.syntax_error else ExpressionError
    error = error_class(message, str(text), problems=analysis.problems, line=first.line)
    if isinstance(error, SyntaxError):
        error.lineno = first.line
        error.offset = first.column
    return error


# --------------------------------------------------------------------------
# Evaluation (simpleeval over the validated tree)
# --------------------------------------------------------------------------


class _Evaluator(simpleeval.EvalWithCompoundTypes):
    """simpleeval evaluator restricted to the language's node types.

    The static checker has already accepted the tree; this class is the second
    layer: only the node types of the language are dispatched, operators and
    functions are the safe versions defined here, names are looked up in the
    dossier data only, and every value the expression builds is size-checked.
    """

    def __init__(self, names: Mapping[str, Any]) -> None:
        super().__init__(operators={}, functions=dict(FUNCTIONS), names=names)  # type: ignore[arg-type]
        # EvalWithCompoundTypes adds list/tuple/dict/set constructors; remove them.
        self.functions = dict(FUNCTIONS)
        self.operators = {
            ast.Add: self._op_add,
            ast.Sub: self._op_sub,
            ast.Mult: self._op_mult,
            ast.Div: self._op_div,
            ast.FloorDiv: self._op_floordiv,
            ast.Mod: self._op_mod,
            ast.Pow: self._op_pow,
            ast.USub: self._op_neg,
            ast.UAdd: self._op_pos,
            ast.Not: lambda value: not value,
            ast.Eq: lambda a, b: a == b,
            ast.NotEq: lambda a, b: a != b,
            ast.Lt: lambda a, b: a < b,
            ast.LtE: lambda a, b: a <= b,
            ast.Gt: lambda a, b: a > b,
            ast.GtE: lambda a, b: a >= b,
            ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b,
            ast.Is: lambda a, b: a is b,
            ast.IsNot: lambda a, b: a is not b,
        }
        self.nodes = {
            ast.Constant: self._eval_constant,
            ast.Name: self._eval_name,
            ast.List: self._eval_list,
            ast.Tuple: self._eval_tuple,
            ast.Dict: self._eval_dict,
            ast.Subscript: self._eval_subscript,
            ast.BoolOp: self._eval_boolop,
            ast.UnaryOp: self._eval_unaryop,
            ast.BinOp: self._eval_binop,
            ast.Compare: self._eval_compare,
            ast.IfExp: self._eval_ifexp,
            ast.Call: self._eval_call,
        }
        # id -> (value, size): sizes of values measured during this evaluation.
        self._sizes: dict[int, tuple[Any, int]] = {}

    # -- dispatch -----------------------------------------------------------

    def _eval(self, node: ast.AST) -> Any:
        handler = self.nodes.get(type(node))
        if handler is None:
            raise _Failure(f"'{type(node).__name__}' is not supported")
        result = handler(node)
        # Constant-time replacement for simpleeval's recursive result check
        # (data values may be large): functions, classes, modules are not values.
        if callable(result) or isinstance(result, types.ModuleType):
            raise _Failure("Functions and modules cannot be used as values")
        return result

    def run(self, node: ast.AST, expression: str) -> Any:
        self.expr = expression
        return self._eval(node)

    # -- nodes --------------------------------------------------------------

    def _eval_name(self, node: ast.Name) -> Any:
        try:
            return self.names[node.id]
        except KeyError:
            raise _Failure(f"Unknown field '{node.id}'") from None

    def _eval_call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.keywords:
            raise _Failure(
                "Only listed functions can be called, with positional arguments"
            )
        entry = _FUNCTION_TABLE.get(node.func.id)
        if entry is None or node.func.id not in self.functions:
            raise _Failure(f"Function '{node.func.id}' is not available")
        function, minimum, maximum = entry
        args = [self._eval(argument) for argument in node.args]
        if len(args) < minimum or (maximum is not None and len(args) > maximum):
            raise _Failure(f"Wrong number of arguments for {node.func.id}()")
        return function(*args)

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        container = self._eval(node.value)
        key = self._eval(node.slice)
        if isinstance(container, Mapping):
            try:
                return container[key]
            except KeyError:
                raise _Failure(f"Key {_shorten(repr(key), 40)} not found") from None
            except TypeError:
                raise _Failure(
                    f"A {_type_name(key)} cannot be used as a dictionary key"
                ) from None
        if isinstance(container, (list, tuple, str)):
            if not isinstance(key, int):
                raise _Failure(
                    f"A list or text index must be an integer, got {_type_name(key)}"
                )
            try:
                return container[key]
            except IndexError:
                raise _Failure(
                    f"Index {key} is out of range (length {len(container)})"
                ) from None
        raise _Failure(f"Cannot use [...] on a {_type_name(container)}")

    def _eval_list(self, node: ast.List) -> list[Any]:
        values = [self._eval(element) for element in node.elts]
        return self._built(values, 1 + sum(self._measure(v) for v in values))

    def _eval_tuple(self, node: ast.Tuple) -> tuple[Any, ...]:
        values = tuple(self._eval(element) for element in node.elts)
        return self._built(values, 1 + sum(self._measure(v) for v in values))

    def _eval_dict(self, node: ast.Dict) -> dict[str, Any]:
        result: dict[str, Any] = {}
        size = 1
        for key_node, value_node in zip(node.keys, node.values):
            if not (
                isinstance(key_node, ast.Constant) and isinstance(key_node.value, str)
            ):
                raise _Failure("Dictionary keys must be text literals")
            value = self._eval(value_node)
            result[key_node.value] = value
            size += len(key_node.value) + self._measure(value)
        return self._built(result, size)

    # -- sizes --------------------------------------------------------------

    def _measure(self, value: Any) -> int:
        """Total size of a value (nested values + text characters), capped."""
        if isinstance(value, str):
            return max(1, len(value))
        if not isinstance(value, (list, tuple, dict)):
            return 1
        known = self._sizes.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        limit = MAX_VALUE_SIZE + 1
        total = 0
        stack: list[Any] = [value]
        while stack and total < limit:
            item = stack.pop()
            if isinstance(item, str):
                total += max(1, len(item))
            elif isinstance(item, (list, tuple)):
                cached = self._sizes.get(id(item))
                if cached is not None and cached[0] is item and item is not value:
                    total += cached[1]
                else:
                    total += 1
                    stack.extend(item)
            elif isinstance(item, dict):
                total += 1
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                total += 1
        total = min(total, limit)
        self._sizes[id(value)] = (value, total)
        return total

    def _built(self, value: Any, size: int) -> Any:
        if size > MAX_VALUE_SIZE:
            raise _Failure(
                f"Value is too large (more than {MAX_VALUE_SIZE:,} items and characters in total)"
            )
        if isinstance(value, (list, tuple, dict)):
            self._sizes[id(value)] = (value, size)
        return value

    # -- operators ----------------------------------------------------------

    @staticmethod
    def _numbers(symbol: str, a: Any, b: Any) -> None:
        if not (_is_number(a) and _is_number(b)):
            raise _Failure(
                f"Operator '{symbol}' needs numbers, got {_type_name(a)} and {_type_name(b)}"
            )

    def _op_add(self, a: Any, b: Any) -> Any:
        if _is_number(a) and _is_number(b):
            return _check_int(a + b)
        if (isinstance(a, str) and isinstance(b, str)) or (
            type(a) is type(b) and isinstance(a, (list, tuple))
        ):
            length = len(a) + len(b)
            if length > MAX_SEQUENCE_LENGTH:
                raise _Failure(
                    f"Result of '+' is too long ({length:,}; the maximum is {MAX_SEQUENCE_LENGTH:,})"
                )
            if isinstance(a, str):
                return a + b
            return self._built(a + b, self._measure(a) + self._measure(b) - 1)
        raise _Failure(
            f"Operator '+' cannot combine {_type_name(a)} and {_type_name(b)}"
        )

    def _op_sub(self, a: Any, b: Any) -> Any:
        self._numbers("-", a, b)
        return _check_int(a - b)

    def _op_mult(self, a: Any, b: Any) -> Any:
        if _is_number(a) and _is_number(b):
            return _check_int(a * b)
        sequence, count = (a, b) if isinstance(a, (str, list, tuple)) else (b, a)
        if not isinstance(sequence, (str, list, tuple)) or not isinstance(count, int):
            raise _Failure(
                f"Operator '*' cannot combine {_type_name(a)} and {_type_name(b)}"
            )
        if count <= 0:
            return sequence[:0]
        length = len(sequence) * count
        if length > MAX_SEQUENCE_LENGTH:
            raise _Failure(
                f"Result of '*' is too long ({length:,}; the maximum is {MAX_SEQUENCE_LENGTH:,})"
            )
        if isinstance(sequence, str):
            return sequence * count
        size = (self._measure(sequence) - 1) * count + 1
        if size > MAX_VALUE_SIZE:
            raise _Failure(
                f"Value is too large (more than {MAX_VALUE_SIZE:,} items and characters in total)"
            )
        return self._built(sequence * count, size)

    def _op_div(self, a: Any, b: Any) -> Any:
        self._numbers("/", a, b)
        return a / b

    def _op_floordiv(self, a: Any, b: Any) -> Any:
        self._numbers("//", a, b)
        return _check_int(a // b)

    def _op_mod(self, a: Any, b: Any) -> Any:
        self._numbers("%", a, b)
        return _check_int(a % b)

    def _op_pow(self, a: Any, b: Any) -> Any:
        self._numbers("**", a, b)
        if abs(b) > MAX_EXPONENT:
            raise _Failure(
                f"Exponent {_shorten(repr(b), 30)} is too large (the maximum is {MAX_EXPONENT})"
            )
        # a ** b >= 2 ** ((bits - 1) * b): refuse before computing anything big.
        if (
            isinstance(a, int)
            and isinstance(b, int)
            and b > 0
            and (abs(a).bit_length() - 1) * b > MAX_INT.bit_length()
        ):
            raise _Failure("Result of '**' is too large (the limit is 10**30)")
        return _check_int(a**b)

    @staticmethod
    def _op_neg(value: Any) -> Any:
        if not _is_number(value):
            raise _Failure(f"Unary '-' needs a number, got {_type_name(value)}")
        return -value

    @staticmethod
    def _op_pos(value: Any) -> Any:
        if not _is_number(value):
            raise _Failure(f"Unary '+' needs a number, got {_type_name(value)}")
        return +value


def _failure_reason(err: BaseException) -> str:
    """Turn any exception raised while evaluating into a short reason."""
    if isinstance(err, _Failure):
        return str(err)
    if isinstance(err, ZeroDivisionError):
        return "Division by zero"
    if isinstance(err, OverflowError):
        return "Number is too large"
    if isinstance(err, (RecursionError, MemoryError)):
        return "Expression is too complex to evaluate"
    if isinstance(err, TypeError):
        return f"Type mismatch: {err}"
    if isinstance(err, simpleeval.InvalidExpression):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _evaluate_node(evaluator: _Evaluator, node: ast.AST, text: str) -> Any:
    try:
        return evaluator.run(node, text)
    except _Failure:
        raise
    except Exception as err:  # every failure becomes an ExpressionError
        raise _Failure(_failure_reason(err)) from err


def evaluate(text: str, data: Mapping[str, Any]) -> Any:
    """Evaluate an expression against dossier data.

    The text is validated first (the parsed, validated tree is cached per
    text).  Raises :class:`ExpressionError` when the text is invalid or the
    evaluation fails.  ``data`` is never modified.
    """
    analysis = _analyse(text, "eval")
    if analysis.tree is None:
        raise _invalid(text, analysis, "expression")
    assert isinstance(analysis.tree, ast.Expression)
    try:
        return _evaluate_node(_Evaluator(data), analysis.tree.body, text)
    except _Failure as err:
        raise ExpressionError(
            f"{err} in expression '{_shorten(text)}'.", text
        ) from err.__cause__


def run_script(text: str, data: dict[str, Any]) -> dict[str, Any]:
    """Run a script; return the assigned names and their values.

    ``data`` is not modified.  Later lines see the values assigned by earlier
    ones (and, for names not yet assigned, the values in ``data``).  Raises
    :class:`ExpressionError` when the script is invalid or a line fails.
    """
    analysis = _analyse(text, "exec")
    if analysis.tree is None:
        raise _invalid(text, analysis, "script")
    assert isinstance(analysis.tree, ast.Module)
    assigned: dict[str, Any] = {}
    names: ChainMap[str, Any] = ChainMap(assigned, data)  # type: ignore[arg-type]
    evaluator = _Evaluator(names)
    for statement in analysis.tree.body:
        try:
            if isinstance(statement, ast.Assign):
                target = statement.targets[0]
                assert isinstance(target, ast.Name)
                assigned[target.id] = _evaluate_node(evaluator, statement.value, text)
            elif isinstance(statement, ast.AugAssign):
                target = statement.target
                assert isinstance(target, ast.Name)
                if target.id not in names:
                    raise _Failure(f"Unknown field '{target.id}'")
                current = names[target.id]
                value = _evaluate_node(evaluator, statement.value, text)
                operator = evaluator.operators[type(statement.op)]
                try:
                    assigned[target.id] = operator(current, value)
                except _Failure:
                    raise
                except Exception as err:
                    raise _Failure(_failure_reason(err)) from err
        except _Failure as err:
            line = statement.lineno
            lines = textwrap.dedent(text).splitlines()
            source_line = lines[line - 1].strip() if 0 < line <= len(lines) else ""
            raise ExpressionError(
                f"{err} in script line {line}: '{_shorten(source_line)}'.",
                text,
                line=line,
            ) from err.__cause__
    return assigned


# --------------------------------------------------------------------------
# SpiffWorkflow integration
# --------------------------------------------------------------------------


class _SafeEnvironment(BasePythonScriptEngineEnvironment):
    """Script environment that evaluates with this module, never Python eval.

    SpiffWorkflow sometimes calls ``script_engine.environment.evaluate``
    directly (process completion conditions, message correlations), so the
    environment itself must be safe, not only the engine.
    """

    def __init__(self) -> None:
        super().__init__({})

    @staticmethod
    def _names(
        context: Mapping[str, Any], external_context: Mapping[str, Any] | None
    ) -> Mapping[str, Any]:
        return ChainMap(context, external_context) if external_context else context  # type: ignore[arg-type]

    def evaluate(
        self,
        expression: str,
        context: Mapping[str, Any],
        external_context: Mapping[str, Any] | None = None,
    ) -> Any:
        return evaluate(expression, self._names(context, external_context))

    def execute(
        self,
        script: str,
        context: dict[str, Any],
        external_context: Mapping[str, Any] | None = None,
    ) -> bool:
        assignments = run_script(script, self._names(context, external_context))  # type: ignore[arg-type]
        context.update(assignments)
        return True

    def call_service(self, context: Mapping[str, Any], **kwargs: Any) -> Any:
        raise ExpressionError("Service tasks are not supported by this engine.")


class SafeScriptEngine(PythonScriptEngine):
    """SpiffWorkflow script engine that only understands the safe language.

    Conditions, timer expressions and scripts from a diagram are checked and
    evaluated by this module; Python's ``eval``/``exec`` are never used.
    """

    def __init__(self) -> None:
        super().__init__(environment=_SafeEnvironment())

    def validate(self, expression: str) -> None:
        """Raise :class:`ExpressionError` if ``expression`` is not valid.

        Text that does not even parse raises an error that is also a
        :class:`SyntaxError` (SpiffWorkflow's DMN engine relies on that).
        """
        analysis = _analyse(expression, "eval")
        if analysis.tree is None:
            raise _invalid(expression, analysis, "expression")

    def evaluate(
        self,
        task: Any,
        expression: str,
        external_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            return self.environment.evaluate(expression, task.data, external_context)
        except Exception as err:
            raise WorkflowTaskException(
                f"Error evaluating expression: {err}", task=task, exception=err
            ) from err

    def execute(
        self, task: Any, script: str, external_context: Mapping[str, Any] | None = None
    ) -> bool:
        try:
            return self.environment.execute(script, task.data, external_context)
        except Exception as err:
            line = getattr(err, "line", None)
            lines = (
                textwrap.dedent(script).splitlines() if isinstance(script, str) else []
            )
            error_line = lines[line - 1] if line and 0 < line <= len(lines) else ""
            raise WorkflowTaskException(
                f"Error running script: {err}",
                task=task,
                exception=err,
                line_number=line,
                error_line=error_line,
            ) from err

    def call_service(self, task: Any, **kwargs: Any) -> Any:
        raise WorkflowTaskException(
            "Service tasks are not supported: diagrams may not call external services.",
            task=task,
            exception=NotImplementedError("call_service"),
        )
