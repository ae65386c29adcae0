"""Points 18 and 19: definition errors raised before anything runs, and a light ``import nborch``."""

from __future__ import annotations

import asyncio
import gc
import graphlib
import subprocess
import sys
import warnings

import pytest

import nborch
from nborch import (
    DAG,
    CircuitOpenError,
    CycleError,
    DefinitionError,
    GraphError,
    InvalidTaskError,
    NborchError,
    RetryPolicy,
    Sequence,
    Task,
    TaskTimeoutError,
    task,
)

# -- the hierarchy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [CycleError, GraphError, DefinitionError, InvalidTaskError, TaskTimeoutError, CircuitOpenError],
    ids=lambda e: e.__name__,
)
def test_every_nborch_error_derives_from_nborch_error(error):
    assert issubclass(error, NborchError)


def test_cycle_error_is_also_a_graphlib_cycle_error():
    assert issubclass(CycleError, graphlib.CycleError)
    assert issubclass(CycleError, GraphError)


def test_task_timeout_error_is_a_timeout_error():
    assert issubclass(TaskTimeoutError, TimeoutError)


# -- cycles --------------------------------------------------------------------------------------


def test_cycle_through_parameter_names_names_the_path():
    @task
    def a(b):
        return b

    @task
    def b(a):
        return a

    with pytest.raises(CycleError, match=r"^tasks form a cycle: 'a' -> 'b' -> 'a'\.") as info:
        nborch.run(DAG(a, b))

    assert info.value.cycle == ["a", "b", "a"]


def test_cycle_error_can_be_caught_as_graphlib_cycle_error():
    @task
    def a(b):
        return b

    @task
    def b(a):
        return a

    with pytest.raises(graphlib.CycleError):
        DAG(a, b).run()


def test_cycle_through_explicit_ordering_names_every_task_on_it():
    def step():
        return 1

    x, y, z = Task(step, name="x"), Task(step, name="y"), Task(step, name="z")
    x >> y >> z >> x
    edges = {("x", "y"), ("y", "z"), ("z", "x")}

    with pytest.raises(CycleError) as info:
        nborch.run(DAG(x, y, z))

    cycle = info.value.cycle
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["x", "y", "z"]
    pairs = set(zip(cycle, cycle[1:]))
    assert pairs == edges or pairs == {(d, u) for u, d in edges}  # one direction all along the path
    path = " -> ".join(repr(name) for name in cycle)
    assert str(info.value).startswith(f"tasks form a cycle: {path}.")


def test_cycle_leaves_tasks_outside_it_out_of_the_cycle_path():
    def step():
        return 1

    entry, x, y = Task(step, name="entry"), Task(step, name="x"), Task(step, name="y")
    entry >> x >> y >> x

    with pytest.raises(CycleError) as info:
        nborch.run(DAG(entry, x, y))

    assert sorted(info.value.cycle[:-1]) == ["x", "y"]


def test_a_task_cannot_run_after_itself():
    a = Task(lambda: 1, name="a")

    with pytest.raises(DefinitionError, match=r"cannot run after itself$"):
        a >> a


@pytest.mark.parametrize("after", ["list", "tuple", "set", "one"])
def test_dag_add_after_takes_nodes_and_names_in_any_collection_and_refuses_the_rest(after):
    """DAG.add(after=) adds a list of nodes at once; anything else (a name, the task itself, a
    value that is no node) goes one by one, with the same errors as ``>>``."""
    a, b, c = Task(lambda: 1, name="a"), Task(lambda: 2, name="b"), Task(lambda *_: 3, name="c")
    ups = {"list": [a, b], "tuple": (a, b), "set": {a, b}, "one": a}[after]
    dag = DAG(a, b)
    dag.add(c, after=ups)
    dag.add(c, after=[])  # nothing more; and a second add with after= adds to the first
    assert c._after == [a] if after == "one" else set(c._after) == {a, b}
    if after in ("list", "tuple"):
        assert c._after == [a, b]  # in the order given
    run = nborch.run(dag, store=False)
    assert run.ok and set(run.upstreams["c"]) == ({"a"} if after == "one" else {"a", "b"})

    d = Task(lambda: 4, name="d")
    with pytest.raises(DefinitionError, match=r"cannot run after itself$"):
        DAG(a).add(d, after=[a, d])
    refused = r"DAG\.add\(after=\.\.\.\) expects tasks or composites, got 5"
    with pytest.raises(InvalidTaskError, match=refused):
        DAG(a).add(Task(lambda: 5, name="e"), after=[a, 5])
    mixed = DAG(a)
    f = mixed.add(Task(lambda: 6, name="f"), after=[a, "a"])  # a node and a name: both kept
    assert f._after == [a, "a"]


# -- graph errors --------------------------------------------------------------------------------


def test_unknown_parameter_dependency_suggests_the_close_task_name():
    @task
    def extract():
        return 1

    @task
    def transform(extrct):
        return extrct

    with pytest.raises(
        GraphError,
        match=r"^task 'transform' needs 'extrct', but no argument was given "
        r"and no task in the DAG has that name\. Did you mean 'extract'\?$",
    ):
        nborch.run(DAG(extract, transform))


def test_unknown_after_name_suggests_the_close_task_name():
    @task
    def extract():
        return 1

    @task
    def load():
        return 2

    dag = DAG(extract)
    dag.add(load, after=["extrac"])

    message = r"^task 'load' runs after 'extrac', but no task has that name\. Did you mean 'extract'\?$"
    with pytest.raises(GraphError, match=message):
        nborch.run(dag)


def test_unknown_dependency_without_a_close_name_gives_no_suggestion():
    @task
    def extract():
        return 1

    @task
    def report(zzz):
        return zzz

    with pytest.raises(GraphError) as info:
        nborch.run(DAG(extract, report))

    assert "Did you mean" not in str(info.value)


def test_two_different_tasks_with_the_same_explicit_name_are_rejected():
    def one():
        return 1

    def two():
        return 2

    message = r"^two different tasks are named 'same': .* Give each a unique name=\.$"
    with pytest.raises(GraphError, match=message):
        nborch.run(DAG(Task(one, name="same"), Task(two, name="same")))


def test_the_same_task_listed_twice_is_not_a_duplicate():
    node = Task(lambda: 1, name="once")

    assert nborch.run(DAG(node, node)).states == {"once": nborch.TaskState.SUCCEEDED}


def test_parameter_matching_several_tasks_is_ambiguous():
    @task
    def fetch(n):
        return n

    @task
    def use(fetch):
        return fetch

    with pytest.raises(
        GraphError,
        match=r"^task 'use': parameter 'fetch' matches several tasks \('fetch', 'fetch\[2\]'\)\.",
    ):
        nborch.run(DAG(fetch(1), fetch(2), use))


def test_required_parameter_with_no_source_in_a_dag_is_rejected():
    @task
    def needs(thing):
        return thing

    with pytest.raises(
        GraphError,
        match=r"^task 'needs' needs 'thing', but no argument was given "
        r"and no task in the DAG has that name\.$",
    ):
        nborch.run(DAG(needs))


def test_required_parameter_with_no_source_outside_a_dag_is_rejected():
    @task
    def needs(thing):
        return thing

    message = r"^task 'needs' needs 'thing', but no argument was given and it is not inside a DAG\.$"
    with pytest.raises(GraphError, match=message):
        needs().run()


def test_several_problems_are_reported_together():
    @task
    def first(missing_one):
        return 1

    @task
    def second(missing_two):
        return 2

    with pytest.raises(GraphError) as info:
        nborch.run(DAG(first, second))

    assert "'missing_one'" in str(info.value)
    assert "'missing_two'" in str(info.value)


# -- bad options and non-tasks -------------------------------------------------------------------


def test_unknown_trigger_rule_in_the_decorator_is_rejected_with_a_suggestion():
    message = r"^unknown trigger rule 'one_sucess'\. Did you mean 'one_success'\? Known rules: all_success, "
    with pytest.raises(DefinitionError, match=message):

        @task(trigger_rule="one_sucess")
        def alert():
            return 1


def test_unknown_trigger_rule_in_the_task_constructor_is_rejected():
    with pytest.raises(DefinitionError, match=r"^task 'alert': unknown trigger rule 'sometimes'\."):
        Task(lambda: 1, name="alert", trigger_rule="sometimes")


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Task(42), r"^Task\(\) expected a callable, got 42 \(int\)$"),
        (lambda: task(42), r"^@task expected a callable, got 42 \(int\)$"),
        (lambda: DAG(42), r"^DAG\(\) expected a callable, got 42 \(int\)$"),
        (
            lambda: Sequence(Task(len, "x"), "not a task"),
            r"^Sequence\(\) expected a callable, got 'not a task' \(str\)$",
        ),
        (lambda: nborch.Parallel(None), r"^Parallel\(\) expected a callable, got None \(NoneType\)$"),
        (lambda: nborch.run(42), r"^run\(\) expected a callable, got 42 \(int\)$"),
        (lambda: Task(len, "x") >> 5, r"^set_downstream\(\) expects tasks or composites, got 5$"),
    ],
    ids=["Task", "task", "DAG", "Sequence", "Parallel", "run", "rshift"],
)
def test_a_non_callable_task_is_rejected(build, message):
    with pytest.raises(InvalidTaskError, match=message):
        build()


def test_invalid_task_error_is_a_type_error():
    with pytest.raises(TypeError):
        Task("not callable")


async def fetch_rows():
    return 1


@pytest.mark.parametrize(
    "build, where",
    [
        (lambda co: Task(co), "Task()"),
        (lambda co: task(co), "@task"),
        (lambda co: DAG(co), "DAG()"),
        (lambda co: nborch.run(co), "run()"),
    ],
    ids=["Task", "task", "DAG", "run"],
)
def test_a_coroutine_object_is_rejected_with_a_hint_and_no_never_awaited_warning(build, where):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(InvalidTaskError) as info:
            build(fetch_rows())
        gc.collect()

    assert str(info.value) == (
        f"{where} expected a function, got a coroutine object fetch_rows(...). "
        "Pass the function and its arguments instead: Task(fetch_rows, ...), or decorate it with @task."
    )


def test_unknown_run_option_is_rejected_with_a_suggestion():
    message = r"^run\(\) got an unknown option 'max_concurency'\. Did you mean 'max_concurrency'\?"
    with pytest.raises(DefinitionError, match=message):
        nborch.run(Task(len, "x"), max_concurency=2)


# -- everything is raised before anything runs ---------------------------------------------------


def _with_side_effect(calls):
    """A task that records it ran; each broken workflow below contains one."""

    @task
    def extract():
        calls.append("extract")
        return 1

    return extract


def _cycle(calls):
    extract = _with_side_effect(calls)

    @task
    def a(b):
        return b

    @task
    def b(a):
        return a

    return DAG(extract, a, b)


def _unknown_dependency(calls):
    extract = _with_side_effect(calls)

    @task
    def transform(extrct):
        return extrct

    return DAG(extract, transform)


def _unknown_after(calls):
    dag = DAG(_with_side_effect(calls))
    dag.add(lambda: 1, after=["nowhere"])
    return dag


def _duplicate_names(calls):
    extract = _with_side_effect(calls)
    return DAG(extract, Task(lambda: 1, name="dup"), Task(lambda: 2, name="dup"))


def _ambiguous_parameter(calls):
    extract = _with_side_effect(calls)

    @task
    def fetch(n):
        return n

    @task
    def use(fetch):
        return fetch

    return DAG(extract, fetch(1), fetch(2), use)


def _missing_parameter(calls):
    extract = _with_side_effect(calls)

    @task
    def needs(thing):
        return thing

    return Sequence(extract(), DAG(needs))


def _cycle_in_a_sequence(calls):
    extract = _with_side_effect(calls)()
    a, b = Task(lambda: 1, name="a"), Task(lambda: 2, name="b")
    a >> b >> a
    return Sequence(extract, DAG(a, b))


BROKEN = [
    pytest.param(_cycle, CycleError, id="cycle"),
    pytest.param(_cycle_in_a_sequence, CycleError, id="cycle-in-nested-dag"),
    pytest.param(_unknown_dependency, GraphError, id="unknown-dependency"),
    pytest.param(_unknown_after, GraphError, id="unknown-after"),
    pytest.param(_duplicate_names, GraphError, id="duplicate-names"),
    pytest.param(_ambiguous_parameter, GraphError, id="ambiguous-parameter"),
    pytest.param(_missing_parameter, GraphError, id="missing-parameter"),
]


@pytest.mark.parametrize("make, error", BROKEN)
def test_nborch_run_raises_definition_errors_before_any_task_runs(make, error):
    calls: list[str] = []
    node = make(calls)

    with pytest.raises(error):
        nborch.run(node)

    assert calls == []


@pytest.mark.parametrize("make, error", BROKEN)
def test_node_run_raises_definition_errors_before_any_task_runs(make, error):
    calls: list[str] = []
    node = make(calls)

    with pytest.raises(error):
        node.run()

    assert calls == []


@pytest.mark.parametrize("make, error", BROKEN)
def test_awaiting_a_broken_node_raises_before_any_task_runs(make, error):
    calls: list[str] = []
    node = make(calls)

    async def main():
        await node

    with pytest.raises(error):
        asyncio.run(main())

    assert calls == []


def test_a_broken_workflow_publishes_no_event(recorder):
    calls: list[str] = []

    with pytest.raises(CycleError):
        nborch.run(_cycle(calls), on_event=recorder)

    assert recorder.events == []


# -- 19. import nborch stays light ---------------------------------------------------------------


def test_import_nborch_does_not_import_notebook_or_heavy_packages():
    code = (
        "import sys\n"
        "import nborch\n"
        "heavy = ('IPython', 'ipywidgets', 'graphviz', 'dask')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)

    assert out.stdout.strip() == "[]"


def test_running_a_workflow_does_not_import_notebook_or_heavy_packages():
    code = (
        "import sys\n"
        "import nborch\n"
        "@nborch.task\n"
        "def one():\n"
        "    return 1\n"
        "assert nborch.run(nborch.DAG(one)).ok\n"
        "heavy = ('IPython', 'ipywidgets', 'graphviz', 'dask')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)

    assert out.stdout.strip() == "[]"


# -- options that would hang, overflow or be ignored: refused at definition ----------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"delay": float("inf")}, r"^RetryPolicy\(delay=\.\.\.\) expects a number >= 0, got inf \(it must be finite"),
        ({"delay": float("nan")}, r"^RetryPolicy\(delay=\.\.\.\) expects a number >= 0, got nan \(NaN"),
        ({"backoff": float("nan")}, r"^RetryPolicy\(backoff=\.\.\.\) expects a number >= 0, got nan"),
        ({"jitter": float("inf")}, r"^RetryPolicy\(jitter=\.\.\.\) expects a number >= 0, got inf"),
        ({"max_delay": float("nan")}, r"^RetryPolicy\(max_delay=\.\.\.\) must be >= 0, got nan"),
        ({"max_attempts": True}, r"^RetryPolicy\(max_attempts=\.\.\.\) expects an integer >= 1, got True$"),
    ],
    ids=["inf-delay", "nan-delay", "nan-backoff", "inf-jitter", "nan-max-delay", "bool-attempts"],
)
def test_retry_policy_refuses_values_that_would_hang_or_mean_nothing(kwargs, message):
    with pytest.raises(DefinitionError, match=message):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"timeout": float("nan")}, r"timeout= expects seconds > 0, got nan"),
        ({"timeout": float("inf")}, r"timeout= expects seconds > 0, got inf \(leave it out for no timeout\)"),
        ({"retries": True}, r"^retries= expects an integer >= 0, got True$"),
        ({"retry_delay": 5}, r"retry_delay= has no effect without retries=N\. Write retries=3, retry_delay=5\."),
        ({"retries": 2, "retry_delay": float("nan")}, r"retry_delay= expects a finite number of seconds >= 0"),
        ({"retry": RetryPolicy(), "retries": 2}, r"give either retry=RetryPolicy\(\.\.\.\) or retries=/retry_delay="),
    ],
    ids=["nan-timeout", "inf-timeout", "bool-retries", "delay-without-retries", "nan-retry-delay", "both-retry-forms"],
)
def test_task_options_that_would_be_ignored_or_hang_are_refused_at_definition(options, message):
    with pytest.raises(DefinitionError, match=message):

        @task(**options)
        def fn():
            return 1


def test_circuit_breaker_refuses_a_nan_reset_timeout():
    with pytest.raises(DefinitionError, match=r"reset_timeout=\.\.\.\) expects seconds >= 0, got nan"):
        nborch.CircuitBreaker(reset_timeout=float("nan"))


def test_limit_by_naming_no_parameter_is_refused_at_definition():
    with pytest.raises(DefinitionError, match=r"^task 'fetch': limit_by= names 'user', but fetch\(\) has no such "
                                              r"parameter\. Did you mean 'users'\? Its parameters: users, page\.$"):

        @task(limit=2, limit_by=("user",))
        def fetch(users, page):
            return 1

    def g(user):
        return user

    with pytest.raises(DefinitionError, match=r"limit_by= names 'host'"):
        Task(g, 1, limit=1, limit_by="host")

    @task(limit=1, limit_by=("user",))  # **kwargs may carry it: allowed
    def h(**kwargs):
        return kwargs

    assert nborch.run(h(user=1), store=False).value == {"user": 1}


def test_the_retry_cap_holds_at_any_attempt_number():
    policy = RetryPolicy(max_attempts=1100, delay=1, max_delay=40)

    assert [policy.delay_for(n) for n in (1, 2, 1024, 1025, 1099)] == [1.0, 2.0, 40.0, 40.0, 40.0]
    assert RetryPolicy(max_attempts=2000, delay=1).delay_for(1500) == float("inf")


@pytest.mark.parametrize("kind", ["generator", "async generator"])
def test_generator_functions_are_refused_because_their_body_would_never_run(kind):
    if kind == "generator":
        def rows():
            yield 1
    else:
        async def rows():
            yield 1

    message = rf"^@task: rows\(\) is an? {kind} function, so calling it would not run its body\."
    with pytest.raises(InvalidTaskError, match=message):
        task(rows)
    with pytest.raises(InvalidTaskError, match=rf"rows\(\) is an? {kind} function"):
        Task(rows)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise KeyError("no message")


def test_an_exception_whose_str_raises_is_reported_and_recorded(tmp_path):
    @task
    def boom():
        raise Unprintable()

    @task
    def fine():
        return 1

    run = nborch.run(DAG(boom, fine), store=str(tmp_path))

    assert run.states["boom"] is nborch.TaskState.FAILED
    assert "Unprintable: <exception str() failed>" in run.report()
    assert "&lt;exception str() failed&gt;" in run._repr_html_()
    assert run.summary().startswith(f"run {run.id} failed")
    # the recorder was not dropped by the event it could not render: the run is on disk
    from nborch.store import get_store

    loaded = nborch.Run.load(run.id, store=get_store(tmp_path))
    assert loaded.status == "failed"
    assert loaded.states == {"boom": nborch.TaskState.FAILED, "fine": nborch.TaskState.SUCCEEDED}
    assert loaded.errors["boom"].type_name == "Unprintable"
    assert loaded.errors["boom"].message == "<exception str() failed>"
    assert 'raise Unprintable()' in loaded.errors["boom"].traceback


def test_a_subscriber_of_nborchs_own_survives_an_event_it_fails_on():
    seen: list[str] = []

    class Own:
        keep_on_error = True

        def __call__(self, event):
            if isinstance(event, nborch.TaskEvent) and event.task == "a":
                raise RuntimeError("cannot render this one")
            if isinstance(event, nborch.TaskEvent):
                seen.append(event.task)

    def user(event):
        if isinstance(event, nborch.TaskEvent) and event.task == "a":
            raise RuntimeError("a user's broken observer")
        if isinstance(event, nborch.TaskEvent):
            seen.append("user:" + event.task)

    a = Task(lambda: 1, name="a")
    b = Task(lambda: 2, name="b")
    a >> b
    nborch.run(DAG(a, b), on_event=[Own(), user], store=False)

    assert "b" in seen  # kept after failing on a's events
    assert "user:b" not in seen  # a user's subscriber that raises is still unsubscribed


def test_a_bug_while_settling_stops_the_run_with_it_instead_of_hanging(monkeypatch):
    """Settling runs in the callers' frames (a task's job, a done callback): an exception there
    (a bug) used to end that caller and leave the run waiting forever for a task nothing would
    settle. It now stops the run: running tasks are cancelled and the run raises the bug, with a
    note naming the task. Injected by making the engine's start of one downstream task raise."""
    from nborch.core.engine import Engine

    real_start = Engine.start

    def start(self, inv):
        if inv.name == "after":
            raise RuntimeError("a bug in start")
        real_start(self, inv)

    monkeypatch.setattr(Engine, "start", start)
    slow_started, slow_stopped = asyncio.Event(), []

    @task
    async def first():
        await slow_started.wait()
        return 1

    @task
    async def after(x):
        return x

    @task
    async def slow():
        slow_started.set()
        try:
            await asyncio.sleep(60)
        finally:
            slow_stopped.append(True)

    f = first()
    with pytest.raises(RuntimeError, match="a bug in start") as caught:
        nborch.run(DAG(f, after(f), slow()), store=False)
    assert any("raised in the engine while settling task 'first'" in n for n in caught.value.__notes__)
    assert slow_stopped == [True]  # cancelled, not left running
    run = nborch.last_run()
    S = nborch.TaskState
    assert run is not None and run.states["first"] is S.SUCCEEDED
    assert run.states["slow"] is S.CANCELLED and run.states["after"] is S.CANCELLED


@pytest.mark.parametrize("where", ["a root", "a downstream task"])
def test_a_sync_task_that_gets_no_thread_fails_the_run_instead_of_hanging_it(monkeypatch, where):
    """When the OS refuses a new thread (CPython raises RuntimeError "can't start new thread"),
    the run raises that error, whether the task is started by the run itself or by its
    upstream's settling, and leaves no task running."""
    import threading

    real_start = threading.Thread.start

    def start(self):
        if self.name == "nborch-worker":
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)

    async def root():
        return 0

    def sync(*_):
        return 1

    r = Task(root, name="root")
    dag = DAG(Task(sync, name="s")) if where == "a root" else DAG(r, Task(sync, r, name="s"))
    with pytest.raises(RuntimeError, match="can't start new thread"):
        nborch.run(dag, store=False)
    run = nborch.last_run()
    assert run is not None and run.states["s"] is not nborch.TaskState.RUNNING
    assert all(s.is_final for s in run.states.values())


def test_a_bug_while_launching_a_deferred_task_stops_the_run(monkeypatch):
    """Past BURST ready tasks, the rest are launched from a loop callback (Engine.drain): an
    exception there (a bug) stops the run and is raised, as one while settling is."""
    from nborch.core.engine import BURST, Engine

    real_launch = Engine.launch

    def launch(self, inv):
        if inv.name == f"leaf{BURST + 5}":
            raise RuntimeError("a bug in launch")
        real_launch(self, inv)

    monkeypatch.setattr(Engine, "launch", launch)

    async def root():
        return 0

    async def leaf(_):
        return 1

    r = Task(root, name="root")
    with pytest.raises(RuntimeError, match="a bug in launch") as caught:
        nborch.run(DAG(r, *[Task(leaf, r, name=f"leaf{i}") for i in range(BURST + 50)]), store=False)
    assert any(f"while launching task 'leaf{BURST + 5}'" in n for n in caught.value.__notes__)
    run = nborch.last_run()
    assert run is not None and all(s.is_final for s in run.states.values())
