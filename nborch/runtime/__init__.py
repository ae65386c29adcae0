"""The runtime of nborch: running the core's scheduler from anywhere (``runner``: ``run()``,
``run_async()``, what ``node.run()`` reaches; ``options``: the run options and their checks;
``recording``: the store, resume plans and the ``Run`` record; ``loop_driver``: driving the
loop from a script, a running loop, nest_asyncio or a thread), output capture, the Dask
executor and schedules. It imports the standard library, the core (``nborch.core``) and itself,
never a front end (display, notebook, store, cli), which it reaches through ``nborch.hooks``;
optional packages (croniter, Dask) are imported where they are used (tests/test_layers.py).
"""
