"""Python's scoping rules over a cell's AST: which scope binds each name. No IPython import.

A cell is read as module code: its top level is the module scope. ``bind_scopes`` makes one
``Scope`` per function, lambda, class, comprehension and (3.12+) annotation scope, with the
names each binds, as the compiler decides them (``symtable`` knows the same rules, but on 3.12+
it folds list, set and dict comprehensions into their parent, PEP 709, and its tables cannot be
matched back to AST nodes, so the rules are applied here; the tests check them against
``symtable``). ``Scope.resolve`` then says where a name used in a scope lives:

* the cell's own level (``MODULE``): a module-level name, or one declared ``global``;
* a class scope that binds it: read in order, so a use before the class binds it falls back
  to the module level (``LOAD_NAME``);
* a function, lambda, comprehension or annotation scope that binds it (a local, or a free
  variable of an enclosing function): never a read of the cell.

Function scopes skip enclosing class scopes (methods do not see class names); an annotation
scope directly in a class sees the class's names (PEP 695). A name bound by ``:=`` in a
comprehension belongs to the nearest enclosing scope that is not a comprehension (PEP 572).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MODULE", "Scope", "annotations_of", "bind_scopes"]

MODULE = None  # what ``resolve`` returns for the cell's own (module) level

_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass(eq=False)
class Scope:
    """One scope: its kind ("module", "function", "class", "comprehension", "annotation")."""

    kind: str
    parent: Scope | None = None
    node: ast.AST | None = None
    bound: set[str] = field(default_factory=set)
    globals: set[str] = field(default_factory=set)  # declared ``global``
    nonlocals: set[str] = field(default_factory=set)  # declared ``nonlocal``
    used: set[str] = field(default_factory=set)  # names read in this scope (not in nested ones)

    def resolve(self, name: str) -> Scope | None:
        """The scope whose binding ``name`` refers to when used here; ``MODULE`` (None) for the
        cell's own level. A class scope returned means class-then-module lookup, in order."""
        if self.kind == "module" or name in self.globals:
            return MODULE
        if name in self.nonlocals:
            return self._enclosing_binding(name, sees_class=False)
        if name in self.bound:
            return self
        return self._enclosing_binding(name, sees_class=self.kind == "annotation")

    def _enclosing_binding(self, name: str, *, sees_class: bool) -> Scope | None:
        scope = self.parent
        while scope is not None and scope.kind != "module":
            if scope.kind == "class":
                if sees_class and name in scope.bound:
                    return scope
            elif name in scope.globals:
                return MODULE
            elif name in scope.bound or name in scope.nonlocals:
                return scope
            sees_class = sees_class and scope.kind == "annotation"
            scope = scope.parent
        # ``nonlocal`` of a name only the cell binds: the cell is compiled into a function, so
        # it refers to the cell's own level.
        return MODULE

    @property
    def binding_scope(self) -> Scope:
        """Where ``:=`` binds from here: the nearest scope that is not a comprehension."""
        scope = self
        while scope.kind == "comprehension" and scope.parent is not None:
            scope = scope.parent
        return scope


def _params(args: ast.arguments) -> Iterable[str]:
    for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
        if a is not None:
            yield a.arg


def annotations_of(args: ast.arguments, returns: ast.expr | None) -> list[ast.expr]:
    every = (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg)
    found = [a.annotation for a in every if a is not None and a.annotation is not None]
    return found + ([returns] if returns is not None else [])


class _Binder(ast.NodeVisitor):
    """Pass 1: every scope of a cell and the names it binds (the whole scope, in any order)."""

    def __init__(self, module: Scope) -> None:
        self.scope = module
        self.scopes: dict[int, Scope] = {}  # id(node that opens a scope) -> its scope

    def open(self, kind: str, node: ast.AST, key: Any = None) -> Scope:
        scope = Scope(kind, self.scope, node)
        self.scopes[id(key if key is not None else node)] = scope
        return scope

    def within(self, scope: Scope, nodes: Iterable[ast.AST | None]) -> None:
        outer, self.scope = self.scope, scope
        for node in nodes:
            if node is not None:
                self.visit(node)
        self.scope = outer

    def bind(self, name: str) -> None:
        self.scope.bound.add(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.scope.used.add(node.id)
        else:  # Store, and Del: ``del x`` makes x local too
            self.bind(node.id)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.scope.binding_scope.bound.add(node.target.id)

    def visit_Global(self, node: ast.Global) -> None:
        self.scope.globals.update(node.names)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.scope.nonlocals.update(node.names)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self.bind(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import  # noqa: N815

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.bind(node.name)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            self.bind(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.bind(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        if node.rest:
            self.bind(node.rest)
        self.generic_visit(node)

    def type_params(self, node: Any) -> Scope | None:
        """The annotation scope of a generic def, class or type alias (3.12+), else None."""
        params = getattr(node, "type_params", None)
        if not params:
            return None
        scope = self.open("annotation", node, key=params)
        for p in params:
            scope.bound.add(p.name)
        self.within(scope, [getattr(p, "bound", None) for p in params])
        self.within(scope, [getattr(p, "default_value", None) for p in params])  # 3.13+
        return scope

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.within(self.scope, [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults])
        annotation = self.type_params(node)
        self.within(annotation or self.scope, annotations_of(node.args, node.returns))
        self.bind(node.name)
        self.function(node, node.args, node.body, annotation)

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.within(self.scope, [*node.args.defaults, *node.args.kw_defaults])
        self.function(node, node.args, [node.body], None)

    def function(self, node: ast.AST, args: ast.arguments, body: list[Any], parent: Scope | None) -> None:
        outer = self.scope
        self.scope = parent or outer
        scope = self.open("function", node)
        scope.bound.update(_params(args))
        self.scope = outer
        self.within(scope, body)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.within(self.scope, node.decorator_list)
        annotation = self.type_params(node)
        self.within(annotation or self.scope, [*node.bases, *(k.value for k in node.keywords)])
        self.bind(node.name)
        outer = self.scope
        self.scope = annotation or outer
        scope = self.open("class", node)
        self.scope = outer
        self.within(scope, node.body)

    def visit_TypeAlias(self, node: Any) -> None:  # ``type X[T] = ...`` (3.12+)
        self.bind(node.name.id)
        annotation = self.type_params(node)
        outer = self.scope
        self.scope = annotation or outer
        value = self.open("annotation", node)  # the value is evaluated lazily, in its own scope
        self.scope = outer
        self.within(value, [node.value])

    def comprehension(self, node: Any, parts: list[ast.AST]) -> None:
        gens: list[ast.comprehension] = node.generators
        self.visit(gens[0].iter)  # the first iterable is evaluated in the enclosing scope
        scope = self.open("comprehension", node)
        nodes: list[ast.AST] = []
        for i, gen in enumerate(gens):
            nodes += [gen.target, *gen.ifs] + ([gen.iter] if i else [])
        self.within(scope, nodes + parts)

    def visit_ListComp(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp) -> None:
        self.comprehension(node, [node.elt])

    visit_SetComp = visit_ListComp  # noqa: N815
    visit_GeneratorExp = visit_ListComp  # noqa: N815

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self.comprehension(node, [node.key, node.value])


def bind_scopes(tree: ast.Module) -> tuple[Scope, dict[int, Scope]]:
    """The module scope of ``tree`` and every nested scope, keyed by ``id()`` of the node that
    opens it (a def, lambda, class, comprehension or type alias; a ``type_params`` list for the
    annotation scope of a generic def, class or alias)."""
    module = Scope("module")
    binder = _Binder(module)
    binder.visit(tree)
    return module, binder.scopes
