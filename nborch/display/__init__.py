"""Front ends: DOT/Mermaid text, HTML, static snapshots, console progress and the notebook widget.

Only this package imports graphviz, rich or ipywidgets, and only inside the functions that
need them, so ``import nborch`` stays light. Importing it registers ``snapshot.run_snapshot_html``
as the way a ``Run`` draws itself in a notebook (``nborch.record`` never imports the display).
"""

from . import snapshot as snapshot  # registers the Run renderer
