"""Cell source -> task: dependency inference and compilation. No IPython import here.

A ``%%task NAME`` cell becomes a function whose parameters are the upstream tasks it reads:

* a task name the cell reads before assigning it is a dependency (f-strings included); a name
  assigned first, a comprehension variable, a function parameter or an attribute such as
  ``ns.extract`` is not;
* the cell's last expression is the task's value (as in ``Out``);
* assignments stay local to the task (parallel cells cannot race on the user namespace), while
  imports and helpers from ordinary cells are visible (the function's globals are the
  notebook's namespace);
* top-level ``await`` makes it an async task.
"""

from __future__ import annotations

import ast
import linecache
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CellTask", "compile_cell", "infer_reads"]

_FLAGS = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_NS = "__nborch_ns__"


class _Reads(ast.NodeVisitor):
    """Walks a cell in execution order, noting names read before the cell assigns them."""

    def __init__(self) -> None:
        self.reads: dict[str, None] = {}
        self.assigned: set[str] = set()
        self.scopes: list[set[str]] = []
        self.is_async = False

    # -- names --

    def load(self, name: str) -> None:
        if any(name in scope for scope in self.scopes):
            return
        if name not in self.assigned:
            self.reads.setdefault(name, None)

    def store(self, name: str) -> None:
        (self.scopes[-1] if self.scopes else self.assigned).add(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.store(node.id)
        else:  # Load, and Del: deleting a name needs it to exist
            self.load(node.id)

    # -- statements whose fields are not in execution order --

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.load(node.target.id)
        self.visit(node.value)
        self.visit(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self.visit(node.target)
        elif not isinstance(node.target, ast.Name):
            self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in (*node.body, *node.orelse):
            self.visit(stmt)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> None:
        self.mark_async()
        self.visit_For(node)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        self.mark_async()
        self.generic_visit(node)

    def visit_Await(self, node: ast.Await) -> None:
        self.mark_async()
        self.generic_visit(node)

    def mark_async(self) -> None:
        if not self.scopes:  # only await at the cell's top level makes the task async
            self.is_async = True

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self.store(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import  # noqa: N815

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.store(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self.store(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.store(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest:
            self.store(node.rest)

    # -- nested scopes --

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for expr in (*node.decorator_list, *node.args.defaults, *filter(None, node.args.kw_defaults)):
            self.visit(expr)
        self.store(node.name)
        self.function_scope(node.args, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]  # noqa: N815

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for expr in (*node.args.defaults, *filter(None, node.args.kw_defaults)):
            self.visit(expr)
        self.function_scope(node.args, [node.body])

    def function_scope(self, args: ast.arguments, body: Iterable[ast.AST]) -> None:
        params = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}
        params |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
        self.scopes.append(params)
        for stmt in body:
            self.visit(stmt)
        self.scopes.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in (*node.decorator_list, *node.bases, *(k.value for k in node.keywords)):
            self.visit(expr)
        self.store(node.name)
        self.scopes.append(set())
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()

    def comprehension(self, node: Any, parts: list[ast.AST]) -> None:
        gens: list[ast.comprehension] = node.generators
        self.visit(gens[0].iter)  # the first iterable is evaluated in the enclosing scope
        self.scopes.append(set())
        for i, gen in enumerate(gens):
            if i:
                self.visit(gen.iter)
            self.visit(gen.target)
            for cond in gen.ifs:
                self.visit(cond)
        for part in parts:
            self.visit(part)
        self.scopes.pop()

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self.comprehension(node, [node.elt])

    visit_SetComp = visit_ListComp  # type: ignore[assignment]  # noqa: N815
    visit_GeneratorExp = visit_ListComp  # type: ignore[assignment]  # noqa: N815

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self.comprehension(node, [node.key, node.value])


def parse_cell(source: str, filename: str) -> ast.Module:
    """Parse a cell body (top-level await allowed); SyntaxError line numbers count in the body."""
    return compile(source, filename, "exec", _FLAGS, dont_inherit=True)  # type: ignore[no-any-return]


class _EagerReads(_Reads):
    """``_Reads`` without the bodies of functions and lambdas: only what the cell reads as it
    runs (a function's body reads its names when it is called)."""

    def function_scope(self, args: ast.arguments, body: Iterable[ast.AST]) -> None:
        pass


def eager_reads(source: str) -> tuple[str, ...]:
    """Names a (transformed) cell reads while it runs, before assigning them, in order."""
    visitor = _EagerReads()
    visitor.visit(parse_cell(source, "<cell>"))
    return tuple(visitor.reads)


def infer_reads(source: str, filename: str = "<cell>") -> tuple[tuple[str, ...], bool]:
    """Names the cell reads before assigning them, in order, and whether it awaits at top level."""
    visitor = _Reads()
    visitor.visit(parse_cell(source, filename))
    return tuple(visitor.reads), visitor.is_async


@dataclass
class CellTask:
    """A task defined by a ``%%task`` cell: its name, body, options and what it reads."""

    name: str
    source: str
    options: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    assigned: frozenset[str] = frozenset()
    is_async: bool = False
    filename: str = ""
    flow: str = "default"

    def dependencies(self, known: Iterable[str]) -> list[str]:
        """The upstream tasks among ``known`` names: tasks this cell reads before assigning."""
        names = set(known)
        return [r for r in self.reads if r in names and r != self.name]

    def function(self, deps: list[str], namespace: dict[str, Any]) -> Any:
        """Compile the cell into ``def NAME(*deps)`` whose globals are ``namespace``."""
        module = parse_cell(self.source, self.filename)
        body = list(module.body)
        if body and isinstance(body[-1], ast.Expr):
            body[-1] = ast.copy_location(ast.Return(value=body[-1].value), body[-1])
        # A notebook global the cell reads and then reassigns would be an unbound local in a
        # function: start such names from the notebook's value.
        rebind = [n for n in self.reads if n in self.assigned and n not in deps]
        prologue = [ast.parse(f"if {n!r} in {_NS}: {n} = {_NS}[{n!r}]").body[0] for n in rebind]
        for stmt in prologue:
            for sub in ast.walk(stmt):
                if hasattr(sub, "lineno"):
                    sub.lineno, sub.end_lineno = 1, 1  # type: ignore[attr-defined]
        args = ast.arguments(
            posonlyargs=[], args=[ast.arg(arg=d) for d in deps], vararg=None,
            kwonlyargs=[ast.arg(arg=_NS)] if rebind else [], kw_defaults=[None] if rebind else [],
            kwarg=None, defaults=[],
        )
        kind = ast.AsyncFunctionDef if self.is_async else ast.FunctionDef
        fields: dict[str, Any] = {
            "name": self.name, "args": args, "body": prologue + (body or [ast.Pass()]),
            "decorator_list": [], "returns": None,
        }
        if "type_params" in kind._fields:  # Python 3.12+
            fields["type_params"] = []
        fdef = kind(**fields, lineno=1, col_offset=0)
        tree = ast.Module(body=[fdef], type_ignores=[])
        ast.fix_missing_locations(tree)
        code = compile(tree, self.filename, "exec", dont_inherit=True)
        local: dict[str, Any] = {}
        exec(code, namespace, local)  # noqa: S102 - the user's own cell, run as they asked
        fn = local[self.name]
        if rebind:
            fn.__kwdefaults__ = {_NS: namespace}
        fn.__qualname__ = self.name
        fn.__doc__ = f"%%task {self.name}"
        return fn


class _Assigned(ast.NodeVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.names.add(node.id)

    def visit_FunctionDef(self, node: ast.AST) -> None:
        self.names.add(node.name)  # type: ignore[attr-defined]

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815
    visit_ClassDef = visit_FunctionDef  # noqa: N815
    visit_Lambda = lambda self, node: None  # noqa: E731


def compile_cell(
    name: str,
    source: str,
    *,
    options: dict[str, Any] | None = None,
    after: Iterable[str] = (),
    flow: str = "default",
) -> CellTask:
    """Check and analyse a task cell. Raises SyntaxError (line numbers within the body)."""
    filename = f"<task {name}>"
    module = parse_cell(source, filename)
    visitor = _Reads()
    visitor.visit(module)
    assigned = _Assigned()
    assigned.visit(module)
    # register the source so tracebacks show the cell's lines
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    return CellTask(
        name=name,
        source=source,
        options=dict(options or {}),
        after=tuple(after),
        reads=tuple(visitor.reads),
        assigned=frozenset(assigned.names),
        is_async=visitor.is_async,
        filename=filename,
        flow=flow,
    )
