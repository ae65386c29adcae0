"""Dependency inference and compilation of %%task cells (no IPython needed)."""

from __future__ import annotations

import asyncio

import pytest

import nborch
from nborch.notebook.cells import compile_cell, infer_reads
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
