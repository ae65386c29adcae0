"""Front ends: DOT/Mermaid text, HTML, console progress and the notebook widget.

Only this package imports graphviz, rich or ipywidgets, and only inside the functions that
need them, so ``import nborch`` stays light.
"""
