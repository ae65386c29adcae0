"""Cell source -> task: dependency inference and compilation. No IPython import here.

A ``%%task NAME`` cell becomes a function whose parameters are the upstream tasks it reads:

* a task name the cell reads before assigning it is a dependency (f-strings included); a name
  assigned first, a comprehension variable, a function parameter or an attribute such as
  ``ns.extract`` is not. Names are resolved by Python's scoping rules (``scopes.py``): a name
  bound by ``:=`` in a comprehension is the cell's own (PEP 572), a name local to an enclosing
  function is not a read, methods do not see their class's names;
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

from .header import check_task_name
from .scopes import Scope, annotations_of, bind_scopes

__all__ = ["CellTask", "compile_cell", "eager_reads", "infer_reads"]

_FLAGS = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_NS = "__nborch_ns__"

class _Reads(ast.NodeVisitor):
    """Walks a cell in execution order, noting the module-level names it reads before the cell
    binds them. Which scope a name belongs to follows Python's rules (``scopes.py``); when
    matters only at the cell's top level and in class bodies, which run in order. A function's
    body is walked where the function is defined, as if it ran there (so a name it reads that
    the cell binds only later is a read)."""

    def __init__(self, tree: ast.Module) -> None:
        self.module, self.opened = bind_scopes(tree)
        self.scope = self.module
        self.reads: dict[str, None] = {}
        self.assigned: set[str] = set()  # module-level names bound so far
        self.class_bound: dict[Scope, set[str]] = {}  # class-level names bound so far
        self.is_async = False

    # -- names --

    def load(self, name: str) -> None:
        where = self.scope.resolve(name)
        if where is not None and (where.kind != "class" or name in self.class_bound.get(where, ())):
            return  # local, free, or a class-level name already bound
        if name not in self.assigned:
            self.reads.setdefault(name, None)

    def store(self, name: str, scope: Scope | None = None) -> None:
        where = (scope or self.scope).resolve(name)
        if where is None:  # MODULE: the cell's level, also through ``global`` in a function
            self.assigned.add(name)
        elif where.kind == "class":
            self.class_bound.setdefault(where, set()).add(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.store(node.id)
        else:  # Load, and Del: deleting a name needs it to exist
            self.load(node.id)

    def within(self, scope: Scope | None, nodes: Iterable[ast.AST | None]) -> None:
        outer, self.scope = self.scope, scope or self.scope
        for node in nodes:
            if node is not None:
                self.visit(node)
        self.scope = outer

    def body(self, scope: Scope, nodes: Iterable[ast.AST]) -> None:
        """A function's or lambda's body (runs when called; ``_EagerReads`` skips it)."""
        self.within(scope, nodes)

    def lazy(self, scope: Scope | None, nodes: Iterable[ast.AST | None]) -> None:
        """What Python evaluates lazily: type parameter bounds, a type alias's value (3.12+)."""
        self.within(scope, nodes)

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
        if self.scope.kind == "class":  # a function body (the cell's, too) never evaluates it
            self.visit(node.annotation)
        if node.value is not None or not isinstance(node.target, ast.Name):
            self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.store(node.target.id, self.scope.binding_scope)  # PEP 572: not the comprehension's

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
        """Top-level ``await`` (also in a list, set or dict comprehension at the top level,
        which runs in place) makes the task async; in a function or a generator it does not."""
        scope: Scope | None = self.scope
        while scope is not None and scope.kind == "comprehension" and not isinstance(scope.node, ast.GeneratorExp):
            scope = scope.parent
        if scope is not None and scope.kind == "module":
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

    def annotation_scope(self, node: Any) -> Scope | None:
        """The annotation scope of a generic def or class (3.12+), its bounds walked."""
        params = getattr(node, "type_params", None)
        if not params:
            return None
        scope = self.opened[id(params)]
        self.lazy(scope, [getattr(p, "bound", None) for p in params])
        self.lazy(scope, [getattr(p, "default_value", None) for p in params])
        return scope

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.within(self.scope, [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults])
        annotation = self.annotation_scope(node)
        self.within(annotation, annotations_of(node.args, node.returns))  # evaluated at definition
        self.store(node.name)
        self.body(self.opened[id(node)], node.body)

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.within(self.scope, [*node.args.defaults, *node.args.kw_defaults])
        self.body(self.opened[id(node)], [node.body])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.within(self.scope, node.decorator_list)
        annotation = self.annotation_scope(node)
        self.within(annotation, [*node.bases, *(k.value for k in node.keywords)])
        self.within(self.opened[id(node)], node.body)  # the body runs before the name is bound
        self.store(node.name)

    def visit_TypeAlias(self, node: Any) -> None:  # ``type X[T] = ...`` (3.12+)
        self.annotation_scope(node)
        self.store(node.name.id)
        self.lazy(self.opened[id(node)], [node.value])

    def comprehension(self, node: Any, parts: list[ast.AST]) -> None:
        gens: list[ast.comprehension] = node.generators
        self.visit(gens[0].iter)  # the first iterable is evaluated in the enclosing scope
        outer, self.scope = self.scope, self.opened[id(node)]
        if any(gen.is_async for gen in gens):
            self.mark_async()
        for i, gen in enumerate(gens):
            if i:
                self.visit(gen.iter)
            self.visit(gen.target)
            for cond in gen.ifs:
                self.visit(cond)
        for part in parts:
            self.visit(part)
        self.scope = outer

    def visit_ListComp(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp) -> None:
        self.comprehension(node, [node.elt])

    visit_SetComp = visit_ListComp  # noqa: N815
    visit_GeneratorExp = visit_ListComp  # noqa: N815

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self.comprehension(node, [node.key, node.value])


def parse_cell(source: str, filename: str) -> ast.Module:
    """Parse a cell body (top-level await allowed); SyntaxError line numbers count in the body."""
    return compile(source, filename, "exec", _FLAGS, dont_inherit=True)


class _EagerReads(_Reads):
    """``_Reads`` without the bodies of functions and lambdas, nor what Python evaluates lazily:
    only what the cell reads as it runs (a function's body reads its names when it is called)."""

    def body(self, scope: Scope, nodes: Iterable[ast.AST]) -> None:
        pass

    def lazy(self, scope: Scope | None, nodes: Iterable[ast.AST | None]) -> None:
        pass


def _analyse(tree: ast.Module, kind: type[_Reads] = _Reads) -> _Reads:
    visitor = kind(tree)
    visitor.visit(tree)
    return visitor


def eager_reads(source: str) -> tuple[str, ...]:
    """Names a (transformed) cell reads while it runs, before assigning them, in order."""
    return tuple(_analyse(parse_cell(source, "<cell>"), _EagerReads).reads)


def infer_reads(source: str, filename: str = "<cell>") -> tuple[tuple[str, ...], bool]:
    """Names the cell reads before assigning them, in order, and whether it awaits at top level."""
    visitor = _analyse(parse_cell(source, filename))
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
    map_over: tuple[str, str] | None = None  # --map ITEM in SOURCE: the item's name and SOURCE

    @property
    def map_item(self) -> str | None:
        return self.map_over[0] if self.map_over else None

    def dependencies(self, known: Iterable[str]) -> list[str]:
        """The upstream tasks among ``known`` names: tasks this cell reads before assigning."""
        names = set(known)
        deps = [r for r in self.reads if r in names and r != self.name and r != self.map_item]
        if self.map_over and self.map_over[1] in names and self.map_over[1] not in deps:
            deps.append(self.map_over[1])  # the task it maps over is an upstream, read or not
        return deps

    def code(self, deps: list[str]) -> tuple[Any, bool]:
        """The cell compiled into ``def NAME(*deps)``, and whether it takes the notebook namespace
        (for names it reads, then rebinds). Raises SyntaxError (line numbers within the body)."""
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
        params = ([self.map_item] if self.map_item else []) + [d for d in deps if d != self.map_item]
        args = ast.arguments(
            posonlyargs=[], args=[ast.arg(arg=d) for d in params], vararg=None,
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
        return compile(tree, self.filename, "exec", dont_inherit=True), bool(rebind)

    def function(self, deps: list[str], namespace: dict[str, Any]) -> Any:
        """The cell as ``def NAME(*deps)`` whose globals are ``namespace``. The same function
        while the cell, its upstreams and the namespace stay the same: building a workflow of
        200 cells for every ``%orch run`` / ``%orch why`` then compiles nothing."""
        memo = self.__dict__.get("_functions")
        if memo is None:
            memo = self.__dict__["_functions"] = {}
        made = memo.get((tuple(deps), id(namespace)))
        if made is not None and made[1] is namespace:
            return made[0]
        fn = self._function(deps, namespace)
        memo[(tuple(deps), id(namespace))] = (fn, namespace)
        return fn

    def _function(self, deps: list[str], namespace: dict[str, Any]) -> Any:
        code, rebinds = self.code(deps)
        local: dict[str, Any] = {}
        exec(code, namespace, local)  # noqa: S102 - the user's own cell, run as they asked
        fn = local[self.name]
        if rebinds:
            fn.__kwdefaults__ = {_NS: namespace}
        fn.__qualname__ = self.name
        fn.__doc__ = f"%%task {self.name}"
        return fn


def compile_cell(
    name: str,
    source: str,
    *,
    options: dict[str, Any] | None = None,
    after: Iterable[str] = (),
    flow: str = "default",
    map_over: tuple[str, str] | None = None,
) -> CellTask:
    """Check and analyse a task cell. Raises DefinitionError for a name that cannot name a task
    (``check_task_name``), SyntaxError (line numbers within the body)."""
    check_task_name(name)
    filename = f"<task {name}>"
    visitor = _analyse(parse_cell(source, filename))
    # the compiled task's locals: what the cell binds at its top level, but not its ``global`` names
    assigned = visitor.module.bound - visitor.module.globals
    cell = CellTask(
        name=name,
        source=source,
        options=dict(options or {}),
        after=tuple(after),
        reads=tuple(visitor.reads),
        assigned=frozenset(assigned),
        is_async=visitor.is_async,
        filename=filename,
        flow=flow,
        map_over=map_over,
    )
    # What only compiling the task function finds (a misplaced nonlocal, an await where it
    # cannot be) is reported now, with the cell's line numbers, not when the workflow runs:
    # every name it reads and does not bind counts as an upstream, the most a run can pass.
    cell.code([r for r in cell.reads if r not in cell.assigned and r != cell.map_item])
    # register the source so tracebacks show the cell's lines
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    return cell
