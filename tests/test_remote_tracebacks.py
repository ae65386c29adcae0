"""A task that fails in a worker process or on Dask shows the traceback its user would see locally:
every frame under the file name its code had here (a notebook cell's, ``<string>`` for ``exec``),
with the source line wherever this process can read it (linecache, IPython's cell cache).

cloudpickle 3.1.3 renames the file of every function it pickles by value to ``<dynamic-code>``
(cloudpipe/cloudpickle#560); these tests hold with any cloudpickle release."""

from __future__ import annotations

import traceback

import pytest

from nborch import ProcessExecutor, task

pytestmark = pytest.mark.timeout(120)

# Three notebook cells: a class, a closure factory using it, and the task function with a nested
# function calling the closure. The failure happens four frames down, in the first cell.
CELLS = [
    "class Parser:\n    def parse(self, text):\n        return int(text)\n",
    (
        "def make_check(limit):\n    parser = Parser()\n\n    def check(value):\n"
        "        return parser.parse(value) < limit\n\n    return check\n"
    ),
    (
        "check = make_check(10)\n\ndef pipeline(text):\n    def inner():\n        return check(text)\n\n"
        "    return inner()\n"
    ),
]


@pytest.fixture(scope="module")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.instance()


@pytest.fixture(scope="module")
def pool():
    executor = ProcessExecutor(max_workers=1)
    yield executor
    executor.shutdown()


@pytest.fixture(scope="module")
def dask():
    pytest.importorskip("distributed")
    from nborch import DaskExecutor

    with DaskExecutor(n_workers=1, threads_per_worker=1) as executor:
        yield executor


def define_cells(shell) -> tuple[object, list[str]]:
    """Run CELLS in a real IPython shell: the task function and the file name of each cell."""
    for source in CELLS:
        shell.run_cell(source).raise_error()
    ns = shell.user_ns
    files = [
        ns["Parser"].parse.__code__.co_filename,
        ns["make_check"].__code__.co_filename,
        ns["pipeline"].__code__.co_filename,
    ]
    assert len(set(files)) == 3 and all(f.startswith("<ipython-input-") for f in files)
    return ns["pipeline"], files


@pytest.mark.parametrize("where", ["pool", "dask"])
def test_a_remote_traceback_names_each_notebook_frame_with_its_cell_and_source_line(where, shell, request):
    executor = request.getfixturevalue(where)
    pipeline, (cell1, cell2, cell3) = define_cells(shell)

    with pytest.raises(ValueError, match="invalid literal for int") as info:
        task(pipeline)("not a number").run(executor=executor, store=False)

    text = "".join(traceback.format_exception(info.value))
    expected = [
        (cell3, 7, "pipeline", "return inner()"),
        (cell3, 5, "inner", "return check(text)"),
        (cell2, 5, "check", "return parser.parse(value) < limit"),
        (cell1, 3, "parse", "return int(text)"),
    ]
    for filename, line, name, source in expected:
        assert f'File "{filename}", line {line}, in {name}\n    {source}\n' in text, text
    assert "<dynamic-code>" not in text


@pytest.mark.parametrize("where", ["pool", "dask"])
def test_an_exec_defined_function_keeps_its_file_name_remotely(where, request):
    executor = request.getfixturevalue(where)
    namespace = {"__name__": "__main__"}
    source = "def helper():\n    return 1 / 0\n\ndef boom():\n    return helper()\n"
    exec(compile(source, "<generated>", "exec"), namespace)  # noqa: S102

    with pytest.raises(ZeroDivisionError) as info:
        task(namespace["boom"])().run(executor=executor, store=False)

    text = "".join(traceback.format_exception(info.value))
    assert 'File "<generated>", line 5, in boom\n' in text
    assert 'File "<generated>", line 2, in helper\n' in text
    assert "<dynamic-code>" not in text
