"""The core of nborch: nodes and composites, the graph, the scheduler (``engine``) and its
attempt policies, limits, events, errors, states and run records. It imports only the standard
library, cloudpickle and itself, never ``nborch.runtime`` nor a front end (display, notebook,
store, cli): where it needs one of them (``Node.run()``, a node's notebook repr, ``Run.load()``)
it calls a hook of ``nborch.hooks`` that the higher layer registers (tests/test_layers.py).
"""
