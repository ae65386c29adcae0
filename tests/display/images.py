"""Reading the graphs a snapshot holds: SVG documents inside ``<img>`` data URIs."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"
_IMG = re.compile(r"<img class='nborch-graph-img'[^>]*src='data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)'")


def graph_svgs(html: str) -> list[str]:
    """The SVG text of every graph image in ``html``, in order."""
    return [base64.b64decode(m.group(1)).decode("utf-8") for m in _IMG.finditer(html)]


def graph_svg(html: str) -> ET.Element:
    """The one graph image of ``html``, parsed."""
    (svg,) = graph_svgs(html)
    return ET.fromstring(svg)


def nodes(svg: ET.Element) -> dict[str, ET.Element]:
    """The node groups of a Graphviz SVG by id ("task-load")."""
    return {g.get("id"): g for g in svg.iter(f"{SVG}g") if "node" in (g.get("class") or "").split()}


def node_texts(svg: ET.Element) -> dict[str, list[str]]:
    """Each node's lines of text, as drawn."""
    return {nid: [t.text or "" for t in g.iter(f"{SVG}text")] for nid, g in nodes(svg).items()}
