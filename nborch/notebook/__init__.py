"""The notebook layer: %%task cells, %orch, and the live display hook (``%load_ext nborch``).

``cells.py`` and ``workflow.py`` do not import IPython, so the headless CLI can use them.
"""
