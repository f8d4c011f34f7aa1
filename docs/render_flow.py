"""Render ``docs/flow.txt`` (the flow as text, one edge a line) into ``docs/flow.svg``.

    python docs/render_flow.py            # writes docs/flow.svg next to this file

Standard library only, and deterministic: the same text always gives the same bytes, so
``tests/test_docs.py`` can check that the committed picture is exactly what its source renders.

The source format:

* ``source -> target`` is one edge, optionally followed by ``[label]``;
* ``#`` starts a comment line; blank lines are ignored;
* a line ``---`` starts the next lane: a node sits in the lane of the block that first names it.

The layout: the first lane (the main path) runs top to bottom, in the order its nodes are first
named; each further lane stands to the right of the one before, its nodes in the same order, each
level with the node of an earlier lane that the line first naming it links it to (else under the
node above), pushed down when that place is taken. Every box has the same size. Edges between
neighbours of one lane are straight; an edge that would jump over a box of its lane arcs to the
left of the first lane, or to the right of a later one; edges between lanes run through the gap
between them, spread along the sides of their boxes so that they do not cross there.
"""

from __future__ import annotations

import html
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "flow.txt"
TARGET = HERE / "flow.svg"

TITLE = "How ses-mail carries a message from SES into Gmail (drawn from docs/flow.txt)"
FONT = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif"
FONT_SIZE = 14
LABEL_FONT_SIZE = 12
#: No font metrics in the standard library: generous average advances for a sans-serif font.
CHAR_WIDTH = 7.8
LABEL_CHAR_WIDTH = 6.4
LINE_HEIGHT = 18
LABEL_LINE_HEIGHT = 14
WRAP = 19  # characters per line of a box
LABEL_WRAP = 22  # characters per line of an edge label
PAD_X = 12
PAD_Y = 9
MARGIN = 12
GAP_Y = 46  # between two boxes of a lane: room for a one-line label
LANE_GAP = 150  # between two lanes: room for the edges that cross it and their labels
ARC_BASE = 40  # how far an arc over one box bulges; each further box adds ARC_STEP
ARC_STEP = 22
LANE_STYLES = (("#dbeafe", "#1d4ed8"), ("#f3f4f6", "#4b5563"))  # (fill, stroke): the main lane, the others
EDGE_COLOUR = "#374151"
TEXT_COLOUR = "#111827"
_EDGE_RE = re.compile(r"^(?P<source>.+?)\s*->\s*(?P<target>.+?)\s*(?:\[(?P<label>[^\]]*)\])?$")


class FlowError(ValueError):
    """A line of the source is not an edge, a comment or a lane break."""


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str


@dataclass
class Node:
    name: str
    lane: int
    lines: list[str]
    #: The node of an earlier lane that the edge first naming this one links it to.
    beside: str | None = None
    x: float = 0.0
    y: float = 0.0
    #: Where edges meet each side ("left", "right", "top", "bottom"): (other end, edge index) → offset.
    ports: dict[str, dict[tuple[float, int], float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Flow:
    nodes: dict[str, Node]
    edges: list[Edge]

    def lanes(self) -> list[list[Node]]:
        count = max(node.lane for node in self.nodes.values()) + 1
        return [[node for node in self.nodes.values() if node.lane == lane] for lane in range(count)]


def parse(text: str) -> Flow:
    """The nodes (with their lanes, in the order first named) and edges of ``text``."""
    nodes: dict[str, Node] = {}
    edges: list[Edge] = []
    lane = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "---":
            lane += 1
            continue
        match = _EDGE_RE.match(line)
        if match is None:
            raise FlowError(f"line {number}: {line!r} is not 'source -> target [label]'")
        edge = Edge(match["source"], match["target"], (match["label"] or "").strip())
        for name, other in ((edge.source, edge.target), (edge.target, edge.source)):
            if name not in nodes:
                known = nodes.get(other)
                beside = other if known is not None and known.lane < lane else None
                nodes[name] = Node(name, lane, wrap(name, WRAP), beside)
        edges.append(edge)
    if not edges:
        raise FlowError("no edges")
    return Flow(nodes, edges)


def wrap(text: str, width: int) -> list[str]:
    """Words onto lines of at most ``width`` characters (a longer word keeps a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


@dataclass(frozen=True)
class Geometry:
    box_width: float
    box_height: float
    width: float
    height: float


def _span(flow: Flow, edge: Edge) -> int:
    """How many places apart the ends of an edge within one lane are (1: neighbours; 0: other lanes)."""
    source, target = flow.nodes[edge.source], flow.nodes[edge.target]
    if source.lane != target.lane:
        return 0
    lane = flow.lanes()[source.lane]
    return abs(lane.index(source) - lane.index(target))


def _bulge(span: int) -> float:
    return ARC_BASE + ARC_STEP * (span - 2)


def _label_width(text: str) -> float:
    return max(len(line) for line in wrap(text, LABEL_WRAP)) * LABEL_CHAR_WIDTH + 8


def layout(flow: Flow) -> Geometry:
    """Place every node (its top left corner) and size the picture."""
    longest = max(len(line) for node in flow.nodes.values() for line in node.lines)
    most = max(len(node.lines) for node in flow.nodes.values())
    box_width, box_height = longest * CHAR_WIDTH + 2 * PAD_X, most * LINE_HEIGHT + 2 * PAD_Y
    lanes = flow.lanes()
    arcs = [edge for edge in flow.edges if _span(flow, edge) > 1]

    def room(lane: int) -> float:
        """How far the arcs of a lane reach out from it, with their labels."""
        reach = [
            _bulge(_span(flow, e)) * 0.75 + _label_width(e.label) + 4 for e in arcs if flow.nodes[e.source].lane == lane
        ]
        return max(reach, default=0.0)

    left = MARGIN + room(0)
    bottom = 0.0
    for index, lane in enumerate(lanes):
        below: float | None = None
        for node in lane:
            node.x = left + index * (box_width + LANE_GAP)
            wanted = flow.nodes[node.beside].y if node.beside is not None else MARGIN
            node.y = wanted if below is None else max(wanted, below)
            below = node.y + box_height + GAP_Y
            bottom = max(bottom, node.y + box_height)
    right = left + len(lanes) * box_width + (len(lanes) - 1) * LANE_GAP
    if len(lanes) > 1:
        right += room(len(lanes) - 1)
    return Geometry(box_width, box_height, right + MARGIN, bottom + MARGIN)


def _sides(flow: Flow, edge: Edge) -> tuple[str, str]:
    """Which side of its box each end of ``edge`` leaves from."""
    source, target = flow.nodes[edge.source], flow.nodes[edge.target]
    if source.lane != target.lane:
        return ("right", "left") if source.lane < target.lane else ("left", "right")
    if _span(flow, edge) > 1:
        side = "left" if source.lane == 0 else "right"
        return side, side
    return ("bottom", "top") if target.y > source.y else ("top", "bottom")


def assign_ports(flow: Flow, geometry: Geometry) -> None:
    """Spread the edges that meet one side of a box along it, in the order of where they come from."""
    for node in flow.nodes.values():
        node.ports = {}
    for index, edge in enumerate(flow.edges):
        source, target = flow.nodes[edge.source], flow.nodes[edge.target]
        for node, other, side in zip((source, target), (target, source), _sides(flow, edge), strict=True):
            along = other.y if side in ("left", "right") else other.x
            node.ports.setdefault(side, {})[(along, index)] = 0.0
    for node in flow.nodes.values():
        for side, ports in node.ports.items():
            length = geometry.box_height if side in ("left", "right") else geometry.box_width
            for rank, key in enumerate(sorted(ports)):
                ports[key] = length * (rank + 1) / (len(ports) + 1)


def _point(node: Node, side: str, key: tuple[float, int], geometry: Geometry) -> tuple[float, float]:
    offset = node.ports[side][key]
    if side == "left":
        return node.x, node.y + offset
    if side == "right":
        return node.x + geometry.box_width, node.y + offset
    return node.x + offset, node.y if side == "top" else node.y + geometry.box_height


def _num(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _label(x: float, y: float, text: str) -> list[str]:
    """A label centred on (x, y), on a white ground so that the line under it does not show through."""
    lines = wrap(text, LABEL_WRAP)
    width, height = _label_width(text), len(lines) * LABEL_LINE_HEIGHT + 2
    out = [
        f'<rect x="{_num(x - width / 2)}" y="{_num(y - height / 2)}" width="{_num(width)}" height="{_num(height)}" '
        'rx="3" fill="#ffffff" fill-opacity="0.92"/>'
    ]
    first = y - (len(lines) - 1) * LABEL_LINE_HEIGHT / 2
    for number, line in enumerate(lines):
        out.append(
            f'<text x="{_num(x)}" y="{_num(first + number * LABEL_LINE_HEIGHT)}" text-anchor="middle" '
            f'dominant-baseline="central" font-size="{LABEL_FONT_SIZE}" fill="{TEXT_COLOUR}">{html.escape(line)}</text>'
        )
    return out


def _edge(flow: Flow, index: int, edge: Edge, geometry: Geometry) -> tuple[str, tuple[float, float]]:
    """The path of an edge, and where its label goes."""
    source, target = flow.nodes[edge.source], flow.nodes[edge.target]
    source_side, target_side = _sides(flow, edge)
    x1, y1 = _point(source, source_side, (target.y if source_side in ("left", "right") else target.x, index), geometry)
    x2, y2 = _point(target, target_side, (source.y if target_side in ("left", "right") else source.x, index), geometry)
    span = _span(flow, edge)
    if span > 1:
        outward = -1 if source_side == "left" else 1
        bulge = _bulge(span) * outward
        path = (
            f"M{_num(x1)},{_num(y1)} C{_num(x1 + bulge)},{_num(y1)} {_num(x2 + bulge)},{_num(y2)} {_num(x2)},{_num(y2)}"
        )
        # The label stands outside the arc's apex (at 3/4 of the bulge), clear of the boxes.
        apex = (x1 + x2) / 2 + bulge * 0.75
        return path, (apex + outward * (_label_width(edge.label) / 2 + 4), (y1 + y2) / 2)
    return f"M{_num(x1)},{_num(y1)} L{_num(x2)},{_num(y2)}", ((x1 + x2) / 2, (y1 + y2) / 2)


def render(text: str) -> str:
    """The SVG document for the flow ``text``."""
    flow = parse(text)
    geometry = layout(flow)
    assign_ports(flow, geometry)
    width, height = _num(geometry.width), _num(geometry.height)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="{html.escape(FONT)}" font-size="{FONT_SIZE}" role="img" aria-labelledby="flow-title">',
        f'<title id="flow-title">{html.escape(TITLE)}</title>',
        "<defs>",
        '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{EDGE_COLOUR}"/></marker>',
        "</defs>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    labels: list[str] = []
    for index, edge in enumerate(flow.edges):
        path, (x, y) = _edge(flow, index, edge, geometry)
        out.append(f'<path d="{path}" fill="none" stroke="{EDGE_COLOUR}" stroke-width="1.5" marker-end="url(#arrow)"/>')
        if edge.label:
            labels.extend(_label(x, y, edge.label))
    for node in flow.nodes.values():
        fill, stroke = LANE_STYLES[min(node.lane, len(LANE_STYLES) - 1)]
        out.append(
            f'<rect x="{_num(node.x)}" y="{_num(node.y)}" width="{_num(geometry.box_width)}" '
            f'height="{_num(geometry.box_height)}" rx="8" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>'
        )
        first = node.y + geometry.box_height / 2 - (len(node.lines) - 1) * LINE_HEIGHT / 2
        for number, line in enumerate(node.lines):
            out.append(
                f'<text x="{_num(node.x + geometry.box_width / 2)}" y="{_num(first + number * LINE_HEIGHT)}" '
                f'text-anchor="middle" dominant-baseline="central" fill="{TEXT_COLOUR}">{html.escape(line)}</text>'
            )
    out.extend(labels)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Render ``docs/flow.txt`` into ``docs/flow.svg`` (or the paths given: SOURCE [TARGET])."""
    args = sys.argv[1:] if argv is None else argv
    source = Path(args[0]) if args else SOURCE
    target = Path(args[1]) if len(args) > 1 else TARGET
    target.write_text(render(source.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
