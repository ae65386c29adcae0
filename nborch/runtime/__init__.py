"""The runtime of nborch: driving the core's scheduler from a script, a running loop,
nest_asyncio or a thread (``runner``), output capture, the Dask executor and schedules. It
imports the standard library, the core (``nborch.core``) and itself, never a front end
(display, notebook, store, cli), which it reaches through ``nborch.hooks``; optional packages
(croniter, Dask) are imported where they are used (tests/test_layers.py).
"""
