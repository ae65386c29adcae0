"""Property tests of mapping (issue 11) against an independent model written here.

Random mapped pipelines: a first stage that maps, zips or sweeps (``fn.product``) over random
inputs (lengths 0 included), given as lists or as the value of an upstream task; up to two more
element-wise stages (``c.map(b.map(a.map(xs)))``); per-item failures, retries and skips; reduces of
random stages under random trigger rules. The model says, for every item and reduce, its state,
attempts and value; the run's effects are checked against it: which item bodies ran and how often
(each body appends to a log), what each reduce received.

Then: streaming through random stacks of stages (observed with events, not sleeps), per-item
cache over random edits of the input, ``@task(limit=N)`` over random widths, and random nests of
maps started from inside running tasks under random limits.

The model reads only the issue's text and the lead's decisions: items are ``NAME:i``; a stage's
item i depends on the previous stage's item i only; a reduce counts every item as an upstream
(Airflow's rules on the items' states) and receives the succeeded items' values in input order
(``[]`` for an empty input, and then it runs under any rule: a task with no upstream runs); the
placeholder ends SUCCEEDED, or UPSTREAM_FAILED when an item failed or could not run.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nborch
from nborch import RetryPolicy, Skip, TaskEvent, TaskState, task
from nborch.store import get_store

pytestmark = pytest.mark.timeout(300)

S = TaskState
SETTINGS = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
WAIT = 30.0
FINAL = {S.SUCCEEDED, S.FAILED, S.SKIPPED, S.UPSTREAM_FAILED, S.CANCELLED}

# -- the model ----------------------------------------------------------------------------------

RUN, SKIPPED, UPSTREAM_FAILED = "run", "skipped", "upstream_failed"
RULES = (
    "all_success", "all_failed", "all_done", "all_done_min_one_success", "all_skipped", "one_success",
    "one_failed", "one_done", "none_failed", "none_failed_min_one_success", "none_skipped",
)
WAITS_FOR_ALL = {r for r in RULES if not r.startswith("one_")}  # the others may fire before the last item


def decide(rule: str, states: list[str], first_bad: str | None = None) -> str:
    """What a task under ``rule`` does once all its upstreams (items in these final states) have
    settled, read from Airflow's trigger rules: run, or end skipped / upstream_failed.

    Airflow decides as upstreams settle, and one rule's outcome depends on their order:
    ``all_success`` ends SKIPPED at the first skipped upstream and UPSTREAM_FAILED at the first
    failed one, whichever comes first. ``first_bad`` is the state of that first one (from the
    run's events); with it None, the model answers for failures first."""
    if not states:
        return RUN  # no upstream: runs under any rule
    c = Counter(states)
    ok, skipped, failed, ufailed = c["succeeded"], c["skipped"], c["failed"], c["upstream_failed"]
    n = len(states)
    bad = failed or ufailed
    first = SKIPPED if first_bad == "skipped" else UPSTREAM_FAILED
    table = {
        "all_success": first if bad and skipped else UPSTREAM_FAILED if bad else SKIPPED if skipped else RUN,
        "all_failed": SKIPPED if ok or skipped else RUN,
        "all_done": RUN,
        "all_done_min_one_success": SKIPPED if skipped else UPSTREAM_FAILED if not ok else RUN,
        "all_skipped": SKIPPED if ok or failed or ufailed else RUN,
        "one_success": RUN if ok else SKIPPED if skipped == n else UPSTREAM_FAILED,
        "one_failed": RUN if failed or ufailed else SKIPPED,
        "one_done": RUN if ok or failed else SKIPPED,
        "none_failed": UPSTREAM_FAILED if bad else RUN,
        "none_failed_min_one_success": UPSTREAM_FAILED if bad else SKIPPED if skipped == n else RUN,
        "none_skipped": SKIPPED if skipped else RUN,
    }
    return table[rule]


@dataclass(frozen=True)
class Plan:
    """What one item's body does: ``fails`` attempts raise, then it skips or returns."""

    fails: int = 0
    skip: bool = False


@dataclass
class Stage:
    kind: str  # "sync" | "async"
    retries: int
    plans: dict[int, Plan]  # item index -> plan (absent: succeeds at once)


@dataclass
class Reduce:
    stage: int
    rule: str


@dataclass
class Pipeline:
    first: str  # "map" | "zip" | "product"
    xs: list[int]
    ys: list[int]
    dynamic: bool  # inputs as an upstream task's value
    stages: list[Stage]
    reduces: list[Reduce]
    max_concurrency: int | None

    def params(self) -> list[dict[str, int]]:
        """The first stage's items' parameters, in input order."""
        if self.first == "map":
            return [{"x": x} for x in self.xs]
        if self.first == "zip":
            return [{"x": x, "y": y} for x, y in zip(self.xs, self.ys, strict=True)]
        return [{"x": x, "y": y} for x, y in itertools.product(self.xs, self.ys)]


def first_value(p: dict[str, int]) -> int:
    return p["x"] * 100 + p.get("y", 0)


def next_value(stage: int, v: int) -> int:
    return v * 3 + stage  # injective: a stage's values stay distinct, so a body finds its index


@dataclass
class ItemModel:
    state: str
    attempts: int
    value: int | None
    arg: int | None  # the value it is called with (None: its body never runs)


@dataclass
class Expected:
    items: list[list[ItemModel]]  # per stage, per index
    placeholders: list[str]
    reduces: list[tuple[str, list[int] | None]]  # state, the list it receives (None: not run)


def model(p: Pipeline, settled: list[tuple[str, str]] = ()) -> Expected:
    """``settled``: (task, final state) in the order the run settled them, for ``decide``."""
    items: list[list[ItemModel]] = []
    for k, stage in enumerate(p.stages):
        row = []
        n = len(p.params())
        for i in range(n):
            if k == 0:
                arg = first_value(p.params()[i])
            else:
                up = items[k - 1][i]
                if up.state in ("failed", "upstream_failed"):
                    row.append(ItemModel("upstream_failed", 0, None, None))
                    continue
                if up.state == "skipped":
                    row.append(ItemModel("skipped", 0, None, None))
                    continue
                arg = up.value
            plan = stage.plans.get(i, Plan())
            if plan.fails > stage.retries:
                row.append(ItemModel("failed", stage.retries + 1, None, arg))
            elif plan.skip:
                row.append(ItemModel("skipped", plan.fails + 1, None, arg))
            else:
                row.append(ItemModel("succeeded", plan.fails + 1, next_value(k, arg), arg))
        items.append(row)
    placeholders = [
        "upstream_failed" if any(m.state in ("failed", "upstream_failed") for m in row) else "succeeded"
        for row in items
    ]
    reduces = []
    for red in p.reduces:
        row = items[red.stage]
        mine = {f"s{red.stage}:{i}" for i in range(len(row))}
        first_bad = next((st_ for name, st_ in settled if name in mine and st_ != "succeeded"), None)
        verdict = decide(red.rule, [m.state for m in row], first_bad)
        got = [m.value for m in row if m.state == "succeeded"]
        reduces.append(("succeeded", got) if verdict == RUN else (verdict, None))
    return Expected(items, placeholders, reduces)


# -- random pipelines -----------------------------------------------------------------------------


@st.composite
def pipelines(draw) -> Pipeline:
    first = draw(st.sampled_from(["map", "zip", "product"]))
    small = st.lists(st.integers(0, 9), unique=True, max_size=3 if first == "product" else 6)
    xs = draw(small)
    ys = draw(st.lists(st.integers(0, 9), min_size=len(xs), max_size=len(xs))) if first == "zip" else (
        draw(small) if first == "product" else []
    )
    n = len(xs) * len(ys) if first == "product" else len(xs)
    stages = []
    for _ in range(draw(st.integers(1, 3))):
        retries = draw(st.integers(0, 2))
        plans = draw(st.dictionaries(
            st.integers(0, max(n - 1, 0)),
            st.builds(Plan, fails=st.integers(0, 3), skip=st.booleans()),
            max_size=n,
        )) if n else {}
        stages.append(Stage(draw(st.sampled_from(["sync", "async"])), retries, plans))
    reduces = draw(st.lists(
        st.builds(Reduce, stage=st.integers(0, len(stages) - 1), rule=st.sampled_from(RULES)), max_size=3
    ))
    return Pipeline(first, xs, ys, draw(st.booleans()), stages, reduces,
                    draw(st.sampled_from([None, 1, 2, 3])))


@dataclass
class Effects:
    lock: threading.Lock = field(default_factory=threading.Lock)
    bodies: Counter = field(default_factory=Counter)  # (stage, index) -> attempts that ran
    received: dict[str, list[object]] = field(default_factory=dict)


def build(p: Pipeline, effects: Effects):
    """The pipeline as nborch nodes: stages s0, s1, s2 and reduces r0, r1, r2 under one DAG."""
    index_of: list[dict[int, int]] = []  # per stage: argument -> item index (values are distinct)
    ex = model(p)
    for k, row in enumerate(ex.items):
        index_of.append({m.arg: i for i, m in enumerate(row) if m.arg is not None})

    def stage_fn(k: int, stage: Stage):
        def attempt(arg: int) -> int:
            i = index_of[k][arg]
            with effects.lock:
                effects.bodies[(k, i)] += 1
                n = effects.bodies[(k, i)]
            plan = stage.plans.get(i, Plan())
            if n <= plan.fails:
                raise ConnectionError(f"s{k}:{i} attempt {n} fails")
            if plan.skip:
                raise Skip(f"s{k}:{i} skips")
            return next_value(k, arg)

        options = {"name": f"s{k}"}
        if stage.retries:
            options["retry"] = RetryPolicy(max_attempts=stage.retries + 1, delay=0)
        if k == 0:
            if p.first == "map":
                if stage.kind == "sync":
                    def body(x):
                        return attempt(first_value({"x": x}))
                else:
                    async def body(x):
                        await asyncio.sleep(0)
                        return attempt(first_value({"x": x}))
            elif stage.kind == "sync":
                def body(x, y):
                    return attempt(first_value({"x": x, "y": y}))
            else:
                async def body(x, y):
                    await asyncio.sleep(0)
                    return attempt(first_value({"x": x, "y": y}))
        elif stage.kind == "sync":
            def body(v):
                return attempt(v)
        else:
            async def body(v):
                await asyncio.sleep(0)
                return attempt(v)
        return task(body, **options)

    def source(name: str, values: list[int]):
        if not p.dynamic:
            return values

        def listing():
            return list(values)

        return task(listing, name=name)()

    fns = [stage_fn(k, stage) for k, stage in enumerate(p.stages)]
    xs, ys = source("xs", p.xs), source("ys", p.ys)
    if p.first == "map":
        node = fns[0].map(xs)
    elif p.first == "zip":
        node = fns[0].map(xs, ys)
    else:
        node = fns[0].product(x=xs, y=ys)
    stages = [node]
    for fn in fns[1:]:
        stages.append(fn.map(stages[-1]))

    def reducer(j: int, red: Reduce):
        def body(values):
            with effects.lock:
                effects.received[f"r{j}"] = list(values)
            return ("reduced", j)

        return task(body, name=f"r{j}", trigger_rule=red.rule)(stages[red.stage])

    reduces = [reducer(j, red) for j, red in enumerate(p.reduces)]
    return nborch.DAG(*stages, *reduces)


def is_ordered_subsequence(part: list[object], whole: list[object]) -> bool:
    it = iter(whole)
    return all(any(x == y for y in it) for x in part)


@settings(SETTINGS, max_examples=200)
@given(pipelines())
def test_random_mapped_pipelines_match_the_model(p: Pipeline):
    effects = Effects()
    settled: list[tuple[str, str]] = []

    def on_event(event):
        if isinstance(event, TaskEvent) and event.state in FINAL:
            settled.append((event.task, str(event.state)))

    r = nborch.run(build(p, effects), store=False, max_concurrency=p.max_concurrency, on_event=on_event)
    ex = model(p, settled)
    where = f"{p}\n{dict(r.states)}"

    for k, row in enumerate(ex.items):
        name = f"s{k}"
        rows = r.items(name)
        assert [x.task for x in rows] == [f"{name}:{i}" for i in range(len(row))], where
        assert [str(x.state) for x in rows] == [m.state for m in row], where
        assert [x.attempts for x in rows] == [m.attempts for m in row], where
        assert [x.value for x in rows] == [m.value for m in row], where
        if k == 0:
            assert [x.params for x in rows] == p.params(), where
        for i, m in enumerate(row):  # effects: each body ran exactly as often as its attempts
            assert effects.bodies[(k, i)] == m.attempts, (k, i, where)
        assert str(r.states[name]) == ex.placeholders[k], where
        if ex.placeholders[k] == "succeeded":
            assert r.results[name] == [m.value for m in row if m.state == "succeeded"], where

    for j, (state, got) in enumerate(ex.reduces):
        name = f"r{j}"
        assert str(r.states[name]) == state, (name, where)
        if got is None:
            assert name not in effects.received, (name, where)
        elif p.reduces[j].rule in WAITS_FOR_ALL:
            assert effects.received[name] == got, (name, where)
        else:  # a one_* rule may fire before the last item: what it got so far, in order
            assert is_ordered_subsequence(effects.received[name], got), (name, where)

    assert sum(effects.bodies.values()) == sum(m.attempts for row in ex.items for m in row), where


# -- streaming through element-wise stages ------------------------------------------------------


@SETTINGS
@given(st.integers(3, 8), st.lists(st.sampled_from(["sync", "async"]), min_size=0, max_size=2),
       st.sampled_from([None, 4, 16]))
def test_item_0_leaves_the_last_stage_before_the_last_item_enters_the_first(n, middle, max_concurrency):
    """The first stage runs one item at a time (limit=1) and each item after the first waits
    (bounded) until item 0 has left the last stage, so item n-1 (n >= 3) can start only after
    that; without streaming item 0 could not leave before the whole first stage had run."""
    order: list[str] = []
    out_0 = asyncio.Event()

    async def first(i):
        order.append(f"in:{i}")
        if i > 0:
            await asyncio.wait_for(out_0.wait(), WAIT)
        return i

    def plain(v):
        return v

    async def aplain(v):
        return v

    async def last(v):
        if v == 0:
            order.append("out:0")
            out_0.set()
        return v

    node = task(first, name="first", limit=1).map(range(n))
    for k, kind in enumerate(middle):
        node = task(plain if kind == "sync" else aplain, name=f"mid{k}").map(node)
    node = task(last, name="last").map(node)

    async def go():
        return await nborch.run_async(node, store=False, max_concurrency=max_concurrency)

    r = asyncio.run(go())
    assert r.value == list(range(n)), r.errors
    assert order.index("out:0") < order.index(f"in:{n - 1}")


# -- per-item cache over random edits -------------------------------------------------------------


class Log:
    """Bodies' log, left out of cache keys (README: an object whose ``__reduce__`` leaves its
    state out is not part of the key)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ran: list[int] = []
        self.failing: set[int] = set()

    def __reduce__(self):
        return (Log, ())


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 30), unique=True, max_size=8),  # the input
            st.sets(st.integers(0, 30), max_size=3),  # the elements that fail in that run
        ),
        min_size=1, max_size=4,
    ),
    st.sampled_from(["sync", "async"]),
)
def test_per_item_cache_reruns_exactly_the_elements_never_computed(runs, kind):
    """Each run maps over a random list (elements added, removed, moved); an item re-runs iff its
    element never succeeded in an earlier run of this store (failing elements are not cached)."""
    log = Log()

    def compute(x):
        with log.lock:
            log.ran.append(x)
        if x in log.failing:
            raise ValueError(f"no {x}")
        return x * x

    if kind == "sync":
        def square(x):
            return compute(x)
    else:
        async def square(x):
            return compute(x)

    fn = task(square, name="square", cache=True)
    computed: set[int] = set()
    with tempfile.TemporaryDirectory() as home:
        for xs, failing in runs:
            log.ran.clear()
            log.failing = failing
            r = nborch.run(fn.map(xs), store=Path(home))
            assert sorted(log.ran) == sorted(set(xs) - computed), (xs, computed)
            ok = [x for x in xs if x not in failing or x in computed]
            assert [row.value for row in r.items("square")] == [x * x if x in ok else None for x in xs]
            computed |= set(ok)
        get_store(Path(home)).close()  # its writer thread checkpoints after a run: not while the folder goes


# -- limits across items --------------------------------------------------------------------------


@SETTINGS
@given(st.integers(0, 20), st.integers(1, 5), st.sampled_from([None, 1, 3, 8]))
def test_a_task_limit_holds_across_items(n, limit, max_concurrency):
    running = 0
    peak = 0
    cap = min(limit, max_concurrency or limit, n)
    full = asyncio.Event()

    async def fetch(i):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running >= cap:
            full.set()
        await asyncio.wait_for(full.wait(), WAIT)  # the first `cap` items meet: the limit is reached
        await asyncio.sleep(0)
        running -= 1
        return i

    fn = task(fetch, name="fetch", limit=limit)

    async def go():
        return await nborch.run_async(fn.map(range(n)), store=False, max_concurrency=max_concurrency)

    r = asyncio.run(go())
    assert r.value == list(range(n))
    assert peak == cap


# -- maps started from inside running tasks -------------------------------------------------------


@st.composite
def trees(draw, depth: int = 0):
    """A nest of child maps: a leaf, or a node mapping over its children."""
    if depth >= 2 or draw(st.booleans()):
        return draw(st.integers(0, 9))
    return draw(st.lists(trees(depth + 1), max_size=3))


def total(tree) -> int:
    return tree if isinstance(tree, int) else sum(total(t) for t in tree)


@SETTINGS
@given(trees(), st.sampled_from(["sync", "async"]), st.sampled_from([None, 1, 2]),
       st.sampled_from([None, 1, 2]))
def test_child_maps_nest_without_deadlock_under_limits(tree, kind, max_concurrency, limit):
    options = {"limit": limit} if limit else {}
    if kind == "async":
        async def walk(t):
            if isinstance(t, int):
                return t
            return sum(await fn.map(t))
    else:
        def walk(t):
            if isinstance(t, int):
                return t
            return sum(fn.map(t).result)

    fn = task(walk, **options)
    done = threading.Event()
    box: list[object] = []

    def go():
        try:
            box.append(nborch.run(fn(tree), store=False, max_concurrency=max_concurrency))
        finally:
            done.set()

    threading.Thread(target=go, daemon=True).start()
    assert done.wait(WAIT), f"deadlock: {tree} {kind} max_concurrency={max_concurrency} limit={limit}"
    r = box[0]
    assert r.ok, r.errors
    assert r.value == total(tree)
