"""What a built graph is: one ``Spec`` per leaf task (what to call, with what, after whom,
under which limits), the ``Group`` constraints several leaves share, the ``Graph`` that holds
them, and the run's task ``Names``; and what is known of one call on its own (the parameters
it leaves open, its identity for ``dedupe=True``, the spec of a plain child call).
``nborch.core.graph`` builds them; the engine runs them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .mapping import Mapped, MapTask
from .policies import CircuitBreaker
from .task import Node, Task, fn_name
from .workflow import DAG, Composite

__all__ = [
    "Graph", "Group", "Names", "Spec", "dedupe_key", "find_nodes", "open_params_of", "plan_call", "single_spec",
]

# isinstance() with tuples: an ``X | Y`` union written in a call is built anew at every call
_COLLECTIONS = (list, tuple, set, frozenset)
_HOLDERS = (Node, list, tuple, set, frozenset, dict)  # values that may hold nodes
_LEAVES = (Task, Mapped)


class Group:
    """A constraint shared by several leaves: a Parallel's limit or fail_fast, a CircuitGroup."""

    __slots__ = ("node", "limit", "fail_fast", "breaker", "specs")

    def __init__(self, node: Composite) -> None:
        self.node = node
        self.limit: int | None = getattr(node, "limit", None)
        self.fail_fast: bool = getattr(node, "fail_fast", False)
        self.breaker: CircuitBreaker | None = getattr(node, "breaker", None)
        self.specs: list[Spec] = []


class Spec:
    """One leaf task of a graph: what to call, with what, after whom, under which limits."""

    __slots__ = (
        "name", "base", "task", "explicit", "scope", "groups", "pipe", "named",
        "wants_context", "wants_state", "refs", "up", "down", "parent", "order", "pipe_names",
        "elementwise", "item", "ups", "argslots", "argnames", "argplan", "upnames",
    )

    def __init__(self, task: Task, scope: DAG | None, parent: str | None = None) -> None:
        self.task = task
        self.explicit = task.own_name  # named as a node: Task(f, name=...), not @task(name=...)
        self.base = task.node_name or task.options.name or fn_name(task.fn)  # Task.base_name, inline
        self.name = ""
        self.scope = scope
        self.groups: list[Group] | tuple[()] = ()
        self.pipe: Node | None = None  # Sequence piping: the previous step, as first argument
        self.pipe_names: tuple[str, ...] | None = None  # set when piping must go by keyword
        self.named: dict[str, Node] | None = None  # parameter -> upstream found by its name
        self.wants_context = False
        self.wants_state = False
        self.refs = False  # arguments contain nodes to replace by their values
        # those nodes, in argument order (until wired); with ``argslots``, only those that this
        # call pulled into the graph (its other upstreams are wired where they were collected)
        self.ups: list[Node] | tuple[()] = ()
        # where upstream tasks (not inside lists or dicts) go: (position or keyword, its spec);
        # None when a node is inside a list or dict, or is a mapped node or a composite
        self.argslots: list[tuple[int | str, Spec]] | None = None
        # their values, by the upstream's name: ``argnames`` when every argument is an upstream
        # task (the call is their values, in order), else ``argplan``: ((position, name), ...),
        # ((keyword, name), ...); both None: the engine resolves the arguments in full
        self.argnames: tuple[str, ...] | None = None
        self.argplan: tuple[tuple[tuple[int, str], ...], tuple[tuple[str, str], ...]] | None = None
        self.up: dict[Spec, None] = {}  # ordered set
        # the names of ``up``, in order, where the compile had them at once (a plain DAG's
        # member whose arguments are its upstreams: ``plain_dag``); not to be used when their
        # number is not ``up``'s (an upstream given twice, an edge added since: ``Run._edges``)
        self.upnames: tuple[str, ...] | None = None
        self.down: list[Spec] = []  # () once its run has ended (stopping.release)
        self.parent = parent
        self.order = task.seq
        self.elementwise: list[Spec] | None = None  # a mapped placeholder: the maps it zips item by item
        self.item: tuple[str, int, dict[str, Any]] | None = None  # a map's item: (placeholder, index, params)

    def plan_arguments(self, positional: list[tuple[int, str]], keywords: list[tuple[str, str]]) -> None:
        """Where the upstream values go in the call, by the upstreams' names: (position, name)
        and (keyword, name) pairs; ``argnames`` alone when every argument is an upstream."""
        if not keywords and len(positional) == len(self.task.args):
            self.argnames = tuple(name for _, name in positional)
        else:
            self.argplan = (tuple(positional), tuple(keywords))

    def __repr__(self) -> str:
        return f"<Spec {self.name}>"


def plan_call(spec: Spec) -> None:
    """Plan ``spec``'s call from its upstream tasks among its arguments (``argslots``), once the
    run's names are given: ``argnames`` when every argument is one of them, in order, else
    ``argplan``. Its upstreams are wired by then: it keeps no more of them."""
    slots = spec.argslots
    if slots is not None:
        task = spec.task
        if not task.kwargs and len(slots) == len(task.args):  # Task(fn, *upstream_tasks)
            spec.argnames = tuple([u.name for _, u in slots])
        else:
            spec.plan_arguments([(w, u.name) for w, u in slots if type(w) is int],
                                [(w, u.name) for w, u in slots if type(w) is str])
    spec.argslots, spec.ups = None, ()  # a 100,000-task run keeps no more of them


def find_nodes(value: Any) -> Iterator[Node]:
    """The nodes inside an argument: the value itself, or inside lists, tuples, sets and dicts."""
    if isinstance(value, Node):
        yield value
    elif isinstance(value, _COLLECTIONS):
        for v in value:
            yield from find_nodes(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from find_nodes(v)


class Graph:
    """A flat, validated graph of the leaf tasks of ``root``; built by ``build_graph``."""

    def __init__(self, root: Node) -> None:
        self.root = root
        self.specs: dict[str, Spec] = {}
        self.by_task: dict[int, Spec] = {}  # id(Task) -> Spec (a deduped Task maps to the first)
        self.members: dict[int, list[Spec]] = {}  # id(composite) -> its leaves, for DAG values
        self.groups: list[Group] = []
        self.nodes: dict[int, Node] = {}  # keeps every visited node alive while ids are used
        self.names = Names()  # the run's names (shared with the graphs of its child tasks)
        self.items: dict[str, list[str]] = {}  # a mapped placeholder's name -> its items' names

    def __len__(self) -> int:
        return len(self.specs)

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    @property
    def edges(self) -> list[tuple[str, str]]:
        """(upstream, downstream) pairs, by task name."""
        return [(u.name, s.name) for s in self.specs.values() for u in s.up]

    def leaves(self, node: Node) -> list[Spec]:
        """The leaf specs a node stands for (a mapped node: its placeholder)."""
        if isinstance(node, _LEAVES):
            return [self.by_task[id(node)]]
        return self.members[id(node)]

    def merge(self, part: Graph) -> None:
        """Add a graph built for child tasks of a run into this one."""
        for name, spec in part.specs.items():
            self.specs.setdefault(name, spec)
        for key, spec in part.by_task.items():
            self.by_task.setdefault(key, spec)
        for key, members in part.members.items():
            self.members.setdefault(key, members)
        self.items.update(part.items)
        self.nodes.update(part.nodes)
        self.groups.extend(part.groups)

    def value(self, node: Node, results: dict[str, Any]) -> Any:
        """The value of ``node`` given the results so far (None for tasks without one); a mapped
        node's is the list of the values of its items that succeeded, in input order."""
        if isinstance(node, MapTask):
            node = node.mapped
        if isinstance(node, Mapped):
            name = self.by_task[id(node)].name
            items = self.items.get(name)
            if items is None:  # not expanded: reused or resumed whole, with its list as it was
                value = results.get(name)
                return value if isinstance(value, list) else []
            return [results[n] for n in items if n in results]
        if isinstance(node, Task):
            return results.get(self.by_task[id(node)].name)
        if isinstance(node, DAG):
            return {s.name: results.get(s.name) for s in self.members[id(node)]}
        assert isinstance(node, Composite)
        return [self.value(c, results) for c in node.children]


class Names:
    """The task names of one run: those taken, the next ``[n]`` to try per base name, and
    which function owns each function-level name (``@task(name=...)``). A run keeps one and
    hands it to every graph built for its child tasks, so naming a child costs the same in
    a run of ten tasks as in a run of a million."""

    __slots__ = ("taken", "next_index", "owners")

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self.next_index: dict[str, int] = {}  # base -> the next [n] to try
        self.owners: dict[str, Any] = {}  # function-level name -> its function

    def numbered(self, base: str, touched: dict[str, int | None]) -> str:
        """``base`` if it is free in the run, else ``base[n]`` with the lowest free n from 2 up
        (``touched`` keeps each base's old next index, to give it back if the build fails)."""
        taken, next_index = self.taken, self.next_index
        if base not in taken:
            return base
        i = next_index.get(base, 2)
        while f"{base}[{i}]" in taken:
            i += 1
        if base not in touched:
            touched[base] = next_index.get(base)
        next_index[base] = i + 1
        return f"{base}[{i}]"

    def take(self, base: str, touched: dict[str, int | None]) -> str:
        """Take the name ``numbered`` gives ``base`` for a task of the run."""
        name = self.numbered(base, touched)
        self.taken.add(name)
        return name

    def forget(self, added: list[str], touched: dict[str, int | None]) -> None:
        """Give back the names of a build that failed."""
        self.taken.difference_update(added)
        for base, old in touched.items():
            if old is None:
                self.next_index.pop(base, None)
            else:
                self.next_index[base] = old


# -- calls ---------------------------------------------------------------------------------------


def open_params_of(task: Task) -> list[str]:
    """The parameters of ``task``'s function that its call leaves open (neither bound by its
    arguments nor taken by ``*args``), computed once per function and call shape."""
    info = task.info
    shape = (len(task.args), tuple(task.kwargs) if task.kwargs else ())
    found = info.open_by_shape.get(shape)  # the calls of one function mostly bind alike
    if found is None:
        bound = set(info.positional[: len(task.args)]) | set(task.kwargs)
        if info.var_positional and len(task.args) > len(info.positional):
            bound |= set(info.positional)
        found = info.open_by_shape[shape] = [p for p in info.params if p not in bound]
    return found


def single_spec(task: Task, names: Names, parent: str | None) -> Spec | None:
    """The spec of one new call that needs no graph built (a child task, the common case): a
    plain function's call (no name=, dedupe or ``>>``) with no node among its arguments and no
    required parameter left open, named in the run's ``names``. None for any other call:
    ``build_graph`` builds it (and words what is wrong with it)."""
    if task._after or task.own_name or task.options.name is not None or task.options.dedupe:
        return None
    for value in (*task.args, *task.kwargs.values()) if task.kwargs else task.args:
        if isinstance(value, _HOLDERS) and next(find_nodes(value), None) is not None:
            return None
    spec = Spec(task, None, parent)
    info = task.info
    if info.signature is not None and info.params:
        for p in open_params_of(task):
            if p == "context":
                spec.wants_context = True
            elif p == "state":
                spec.wants_state = True
            elif p in info.required:
                return None
    spec.name = names.take(spec.base, {})  # nothing can fail after this: no name to give back
    return spec


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted(((_freeze(k), _freeze(v)) for k, v in value.items()), key=repr)))
    if isinstance(value, set | frozenset):
        return ("set", frozenset(_freeze(v) for v in value))
    return value


def dedupe_key(task: Task) -> Any:
    """Identity of a call for ``dedupe=True``: the function and its arguments as bound to its
    parameters (so ``load(1)`` and ``load(key=1)`` are one call), with lists, dicts and sets
    compared by value. None when an argument cannot be compared that way."""
    args: Any = (task.args, tuple(sorted(task.kwargs.items())))
    sig = task.info.signature
    if sig is not None:
        try:
            bound = sig.bind(*task.args, **task.kwargs)
            bound.apply_defaults()
            args = tuple(bound.arguments.items())
        except TypeError:
            pass
    try:
        key = (task.fn, _freeze(args))
        hash(key)
    except TypeError:
        return None
    return key
