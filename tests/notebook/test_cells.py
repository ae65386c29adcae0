"""Dependency inference and compilation of %%task cells (no IPython needed)."""

from __future__ import annotations

import ast
import asyncio
import symtable
import sys

import pytest

import nborch
from nborch.notebook.cells import compile_cell, infer_reads
from nborch.notebook.scopes import MODULE, bind_scopes
from nborch.notebook.workflow import NotebookWorkflow

TASKS = {"extract", "transform", "load", "ns"}


def deps(source: str) -> list[str]:
    return compile_cell("t", source).dependencies(TASKS)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("extract", ["extract"]),
        ("y = extract + 1\ny", ["extract"]),
        ("extract = 1\nextract + 1", []),  # assigned before it is read
        ("x = extract\nextract = 2\nextract", ["extract"]),  # read, then assigned
        ("[extract for extract in range(3)]", []),  # comprehension variable
        ("[x for x in extract]", ["extract"]),  # the iterable is read
        ("{k: v for k, v in transform.items()}", ["transform"]),
        ("ns.extract", ["ns"]),  # an attribute is not a task name
        ("obj = object()\nobj.extract", []),
        ("del extract", ["extract"]),  # deleting needs it to exist
        ("f'{extract} rows'", ["extract"]),  # f-strings are read too
        ("f'{len(transform):>10}'", ["transform"]),
        ("def f(extract):\n    return extract\nf(1)", []),  # a parameter shadows the task
        ("def f():\n    return load\nf()", ["load"]),  # a nested function reads the task
        ("lambda transform: transform", []),
        ("class C:\n    x = extract", ["extract"]),
        ("import extract as e", []),
        ("total = 0\ntotal += transform[0]\ntotal", ["transform"]),
        ("load += 1", ["load"]),  # augmented assignment reads first
        ("(n := len(extract))\nn", ["extract"]),
        ("try:\n    pass\nexcept ValueError as load:\n    pass", []),
        ("for transform in extract:\n    pass", ["extract"]),
        ("with open(load) as extract:\n    pass", ["load"]),
        ("if False:\n    extract = 1\nextract", []),  # flow-insensitive: assigned above
    ],
    ids=[
        "bare", "expression", "assign-then-read", "read-then-assign", "comprehension-var",
        "comprehension-iter", "dict-comprehension", "attribute", "attribute-of-local", "del",
        "fstring", "fstring-format-spec", "param-shadows", "nested-function-reads", "lambda-param",
        "class-body", "import-as", "augassign-other", "augassign-self", "walrus", "except-as",
        "for-target", "with-as", "conditional-assign",
    ],
)
def test_dependencies_are_names_read_before_assigned(source, expected):
    assert deps(source) == expected


def test_top_level_await_makes_an_async_task_but_nested_await_does_not():
    assert infer_reads("import asyncio\nawait asyncio.sleep(0)")[1] is True
    assert infer_reads("async def f():\n    await g()\n1")[1] is False


def test_syntax_error_line_numbers_count_within_the_cell_body():
    with pytest.raises(SyntaxError) as info:
        compile_cell("broken", "x = 1\ny = 2\nz = (")
    assert info.value.lineno == 3


def test_errors_only_compiling_finds_are_raised_at_definition_with_cell_line_numbers():
    with pytest.raises(SyntaxError, match="no binding for nonlocal 'q' found") as info:
        compile_cell("t", "x = 1\ndef f():\n    nonlocal q")
    assert info.value.lineno == 3
    # a nonlocal of a name the cell reads (an upstream: a parameter of the task) is fine
    fn = compile_cell("t", "def bump():\n    nonlocal extract\n    extract += 1\nbump()\nextract").function(
        ["extract"], {}
    )
    assert fn(1) == 2


def test_value_is_the_last_expression_and_assignments_stay_local():
    ns: dict = {"helper": lambda v: v * 10}
    cell = compile_cell("t", "x = helper(extract)\nx + 1")
    fn = cell.function(["extract"], ns)
    assert fn(2) == 21
    assert "x" not in ns  # the assignment stayed inside the task


def test_a_cell_without_a_final_expression_returns_none():
    fn = compile_cell("t", "x = 1").function([], {})
    assert fn() is None


def test_a_notebook_global_read_then_reassigned_starts_from_the_notebook_value():
    ns = {"counter": 5}
    fn = compile_cell("t", "counter = counter + 1\ncounter").function([], ns)
    assert fn() == 6 and ns["counter"] == 5


def test_async_cell_compiles_to_a_coroutine_function():
    fn = compile_cell("t", "import asyncio\nawait asyncio.sleep(0)\n7").function([], {})
    assert asyncio.run(fn()) == 7


def test_traceback_points_at_the_cell_line():
    fn = compile_cell("boom", "a = 1\nb = [][a]\nb").function([], {})
    with pytest.raises(IndexError) as info:
        fn()
    frames = [f for f in info.traceback if str(f.path) == "<task boom>"]
    assert frames and frames[-1].lineno + 1 == 2  # pytest's lineno is 0-based


def test_workflow_runs_cells_in_dependency_order_whatever_the_definition_order():
    wf = NotebookWorkflow()
    wf.define(compile_cell("load", "sum(transform)"))  # defined first, runs last
    wf.define(compile_cell("transform", "[v * 2 for v in extract]"))
    wf.define(compile_cell("extract", "[1, 2, 3]"))
    run = nborch.run(wf.build({}))
    assert run.ok and run.results == {"load": 12, "transform": [2, 4, 6], "extract": [1, 2, 3]}


def test_workflow_targets_run_only_their_upstream():
    wf = NotebookWorkflow()
    wf.define(compile_cell("a", "1"))
    wf.define(compile_cell("b", "a + 1"))
    wf.define(compile_cell("c", "100"))
    run = nborch.run(wf.build({}, ["b"]))
    assert set(run.states) == {"a", "b"}


def test_redefining_a_cell_replaces_it_and_marks_downstream_stale():
    wf = NotebookWorkflow()
    wf.define(compile_cell("a", "1"))
    wf.define(compile_cell("b", "a + 1"))
    assert wf.define(compile_cell("a", "2")) == ["b"]
    assert list(wf.cells) == ["a", "b"] and wf.stale == {"b"}
    assert nborch.run(wf.build({})).results["b"] == 3


def test_after_adds_an_ordering_edge_and_unknown_names_are_reported():
    wf = NotebookWorkflow()
    wf.define(compile_cell("a", "1"))
    wf.define(compile_cell("b", "2", after=["a"]))
    assert wf.dependencies("b") == ["a"]
    wf.define(compile_cell("c", "3", after=["aa"]))
    with pytest.raises(nborch.GraphError, match=r"runs after 'aa', but no task has that name\. Did you mean 'a'\?"):
        nborch.run(wf.build({}))


# -- the names a cell reads, as Python's scoping rules resolve them ---------------------------------
#
# A cell reads a name when the name resolves to the cell's own (module) level, per Python's
# rules, and the cell has not bound it yet at that point of its top level. Function bodies are
# walked where they are defined. Builtins count as reads here (`dependencies` keeps task names).

PY312 = pytest.mark.skipif(sys.version_info < (3, 12), reason="type parameters are Python 3.12+")

READS = [
    # PEP 572: `:=` in a comprehension binds in the enclosing scope
    ("[y := f(x) for x in data]\ny", ("data", "f"), "walrus-in-comprehension-binds-the-cell"),
    ("[x for x in data if (n := x)]\nn", ("data",), "walrus-in-comprehension-condition"),
    ("[[(z := a) for a in row] for row in rows]\nz", ("rows",), "walrus-in-nested-comprehension"),
    ("any((hit := v) > 3 for v in values)\nhit", ("any", "values"), "walrus-in-generator"),
    ("[(t := 1) for _ in r]\n[t for _ in r]", ("r",), "walrus-then-comprehension-reads-it"),
    ("def f():\n    [y := 1 for _ in r]\n    return y\nf()", ("r",), "walrus-in-function-is-its-local"),
    ("lambda: [w := 1 for _ in r]\nw", ("r", "w"), "walrus-in-lambda-is-the-lambdas"),
    # names local to an enclosing function
    ("def f():\n    def g(): x\n    x = 0", (), "enclosing-function-local-bound-later"),
    ("def f():\n    x = 0\n    def g():\n        return x\n    return g", (), "enclosing-function-local"),
    ("def f(x):\n    return lambda: x", (), "lambda-closes-over-parameter"),
    ("def f():\n    print(x)\n    x = 1", ("print",), "function-local-read-before-bound"),
    ("def f():\n    del x", (), "del-makes-a-function-local"),
    ("def f():\n    n = 2\n    return [n * i for i in range(3)]", ("range",), "comprehension-sees-function"),
    ("def f(rows):\n    return (r for r in rows)", (), "generator-iterates-a-parameter"),
    ("def f():\n    import os\n    return os", (), "import-in-function-is-local"),
    ("def f():\n    def g():\n        return load\n    return g", ("load",), "nested-function-reads-module"),
    # global and nonlocal
    ("def f():\n    global x\n    return x", ("x",), "declared-global"),
    ("def f():\n    x = 1\n    def g():\n        global x\n        return x\n    return g", ("x",),
     "global-skips-enclosing-local"),
    ("def setup():\n    global cfg\n    cfg = 1\nsetup()\ncfg", (), "global-store-binds-the-cell"),
    ("def bump():\n    global count\n    count += 1", ("count",), "global-augmented-assignment"),
    ("def f():\n    x = 1\n    def g():\n        nonlocal x\n        x += 1\n    return g", (), "nonlocal"),
    ("global g\ng = 1\ng", (), "global-at-top-level"),
    # class scopes: read in order; invisible to methods, lambdas and comprehensions
    ("class C:\n    x = 1\n    y = x", (), "class-body-reads-in-order"),
    ("class C:\n    x = 1\n    def m(self):\n        return x", ("x",), "method-does-not-see-class"),
    ("class C:\n    k = 1\n    f = lambda self: k", ("k",), "lambda-does-not-see-class"),
    ("class C:\n    x = 1\n    ys = [x for _ in range(3)]", ("range", "x"),
     "comprehension-does-not-see-class"),
    ("class C:\n    x = 1\n    ys = [i for i in x]", (), "first-iterable-is-in-the-class"),
    ("def f():\n    x = 1\n    class C:\n        y = x\n        x = 2\n    return C", ("x",),
     "class-name-read-before-bound-is-module-level"),
    ("def f():\n    x = 1\n    class C:\n        y = x\n    return C", (), "class-reads-enclosing-function"),
    ("def f():\n    v = 1\n    class C:\n        def m(self):\n            return v\n    return C", (),
     "method-sees-enclosing-function"),
    ("class C:\n    x: T", ("T",), "class-annotation-is-evaluated"),
    ("class C:\n    C", ("C",), "class-name-is-bound-after-its-body"),
    ("@dec\nclass C(Base, metaclass=M):\n    pass", ("dec", "Base", "M"), "class-decorator-bases-keywords"),
    ("class C(B):\n    def m(self):\n        return super().m()", ("B", "super"), "super"),
    # comprehension scopes
    ("[i for i in range(3)]\ni", ("range", "i"), "comprehension-variable-does-not-leak"),
    ("[extract for extract in extract]", ("extract",), "first-iterable-is-outside"),
    ("[y for x in xs for y in x]", ("xs",), "second-iterable-is-inside"),
    ("sum(v for v in load)", ("sum", "load"), "generator-expression"),
    ("{k: v for k in keys for v in (k, other)}", ("keys", "other"), "dict-comprehension"),
    # lambdas, defaults, decorators, annotations
    ("lambda a: a + b", ("b",), "lambda-parameter"),
    ("f = lambda a=extract: a", ("extract",), "lambda-default"),
    ("def f(x=x):\n    return x", ("x",), "default-is-read-where-defined"),
    ("def f(*, k=extract):\n    pass", ("extract",), "keyword-only-default"),
    ("@deco(arg)\ndef f():\n    pass", ("deco", "arg"), "decorator"),
    ("def f(a: T) -> R:\n    pass", ("T", "R"), "parameter-annotations-are-evaluated"),
    ("x: T = 1\nx", (), "cell-annotation-is-not-evaluated"),
    ("def f():\n    y: T = 1", (), "function-annotation-is-not-evaluated"),
    ("def f(x):\n    return lambda a=x: a", (), "lambda-default-in-function"),
    # the top level, in order
    ("def g():\n    return helper()\nhelper = 1", ("helper",), "function-body-walked-where-defined"),
    ("helper = 1\ndef g():\n    return helper()", (), "function-after-the-binding"),
    ("match cmd:\n    case [a, *rest]:\n        a, rest\n    case {'k': v, **kw}:\n        v, kw", ("cmd",),
     "match-captures"),
    ("obj.count += 1", ("obj",), "augmented-attribute"),
    ("import os.path\nos", (), "dotted-import-binds-first-name"),
    # type parameters (3.12+)
    pytest.param("def first[T](xs: list[T]) -> T:\n    return xs[0]", ("list",), id="generic-function",
                 marks=PY312),
    pytest.param("class Box[T](Base[T]):\n    item: T", ("Base",), id="generic-class", marks=PY312),
    pytest.param("type Pair[T] = tuple[T, U]", ("tuple", "U"), id="type-alias", marks=PY312),
    pytest.param("def f[T: Bound](x: T): pass", ("Bound",), id="type-parameter-bound", marks=PY312),
    pytest.param("class C:\n    A = int\n    def m[T](self, a: A) -> T: pass", ("int",),
                 id="annotation-scope-sees-its-class", marks=PY312),
]


def _params(cases):
    return [c if hasattr(c, "values") else pytest.param(c[0], c[1], id=c[2]) for c in cases]


@pytest.mark.parametrize(("source", "expected"), _params(READS))
def test_reads_follow_pythons_scoping_rules(source, expected):
    assert infer_reads(source)[0] == expected


_COMPREHENSION_TABLES = {"listcomp", "setcomp", "dictcomp", "genexpr"}


def _symtable_globals(source: str) -> dict[tuple[str, int], set[str]]:
    """CPython's own answer: for each ``def``, the names it and the comprehensions in it read
    from the module level (3.12+ folds list comprehensions into the function: merged here too)."""
    out: dict[tuple[str, int], set[str]] = {}

    def names(table) -> set[str]:
        found = {s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_global()}
        for child in table.get_children():
            if child.get_name() in _COMPREHENSION_TABLES:
                found |= names(child)
        return found

    def walk(table) -> None:  # get_type() is a str, or a StrEnum equal to one (3.13+)
        if table.get_type() == "function" and table.get_name() not in _COMPREHENSION_TABLES | {"lambda"}:
            out[(table.get_name(), table.get_lineno())] = names(table)
        for child in table.get_children():
            walk(child)

    walk(symtable.symtable(source, "<cell>", "exec"))
    return out


def _our_globals(source: str) -> dict[tuple[str, int], set[str]]:
    _, scopes = bind_scopes(ast.parse(source))
    out: dict[tuple[str, int], set[str]] = {}
    for scope in scopes.values():
        if scope.kind != "function" or not isinstance(scope.node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        found: set[str] = set()
        inner = [scope]
        while inner:
            s = inner.pop()
            found |= {n for n in s.used if s.resolve(n) is MODULE}
            inner += [c for c in scopes.values() if c.parent is s and c.kind == "comprehension"]
        out[(scope.node.name, scope.node.lineno)] = found
    return out


@pytest.mark.parametrize(("source", "expected"), _params(READS))
def test_function_scopes_agree_with_cpythons_symbol_table(source, expected):
    assert _our_globals(source) == _symtable_globals(source)


def test_the_issues_examples_are_not_dependencies():
    # PEP 572: `y` is the cell's own; `x` is local to `f`, so `g` reads f's `x`, not the task
    walrus = compile_cell("t", "[y := extract for _ in range(2)]\ny")
    assert walrus.dependencies({"y", "extract"}) == ["extract"]
    assert compile_cell("t", "def f():\n    def g(): x\n    x = 0").dependencies({"x"}) == []


def test_a_walrus_in_a_comprehension_gives_the_cells_value():
    wf = NotebookWorkflow()
    wf.define(compile_cell("extract", "[1, 2, 3]"))
    wf.define(compile_cell("peak", "'another task'"))
    wf.define(compile_cell("report", "[peak := v * 10 for v in extract]\npeak"))
    assert wf.dependencies("report") == ["extract"]  # not the task 'peak': the cell binds it
    assert nborch.run(wf.build({})).results["report"] == 30


def test_a_notebook_global_the_cell_reads_then_deletes_or_imports_starts_from_the_notebook_value():
    import math

    ns = {"tmp": 5, "math": math}
    assert compile_cell("t", "seen = tmp\ndel tmp\nseen").function([], ns)() == 5
    assert compile_cell("t", "x = math.pi\nimport math\nx").function([], ns)() == math.pi
    assert ns["tmp"] == 5  # the deletion stayed inside the task


@pytest.mark.parametrize(
    "source",
    ["import asyncio\n[await asyncio.sleep(0, i) for i in range(3)]",
     "async def agen():\n    for i in range(3):\n        yield i\n[i async for i in agen()]"],
    ids=["await-in-comprehension", "async-for-comprehension"],
)
def test_an_async_comprehension_at_the_top_level_makes_an_async_task(source):
    cell = compile_cell("t", source)
    assert cell.is_async
    assert asyncio.run(cell.function([], {})()) == [0, 1, 2]


def test_await_inside_a_generator_expression_does_not_make_the_task_async():
    assert compile_cell("t", "(await x for x in y)").is_async is False
