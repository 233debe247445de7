"""The Foxglove layout in the repository (launch/priorocc.foxglove-layout.json) shows what the
node publishes: every topic it names is one of the node's default outputs (or /diagnostics),
and it shows the markers in base_link, the BEV map, all six overlays and the diagnostics."""
import json
from pathlib import Path

from priorocc_core.classes import CAMERAS
from priorocc_ros.pipeline import PipelineOptions, output_topics
from priorocc_ros.transport.base import resolve_topic

LAYOUT = Path(__file__).resolve().parents[1] / "launch" / "priorocc.foxglove-layout.json"


def _topics(node):
    """Every string value under a key that names a topic, and every key that is a topic."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k.startswith("/"):
                yield k
            if k in ("imageTopic", "topicToRender") and isinstance(v, str):
                yield v
            yield from _topics(v)
    elif isinstance(node, list):
        for v in node:
            yield from _topics(v)


def _panels(layout):
    if isinstance(layout, str):
        return [layout]
    return _panels(layout["first"]) + _panels(layout["second"])


def test_layout_names_only_published_topics_and_shows_every_output():
    """Mutations: an overlay topic renamed in the layout (e.g. ``/priorocc/overlay/CAM_BACK``)
    -> the subset assertion fails; one Image panel removed from the mosaic -> the six-overlay
    assertion fails; the 3D panel's followTf changed to ``map`` -> the frame assertion fails."""
    doc = json.loads(LAYOUT.read_text())
    published = {resolve_topic(t, "priorocc") for _, t in output_topics(CAMERAS, PipelineOptions()).values()}
    published.add("/diagnostics")
    named = set(_topics(doc["configById"]))
    assert named <= published, named - published
    panels = _panels(doc["layout"])
    assert sorted(panels) == sorted(doc["configById"]), "every configured panel is in the mosaic and back"
    cfg = doc["configById"]
    images = {cfg[p]["imageMode"]["imageTopic"] for p in panels if p.startswith("Image!")}
    assert images == {f"/priorocc/seg_overlay/{c}" for c in CAMERAS}
    three_d = [cfg[p] for p in panels if p.startswith("3D!")]
    assert all(c["followTf"] == "base_link" for c in three_d)
    assert any(c["topics"].get("/priorocc/markers", {}).get("visible") for c in three_d)
    assert any(c["topics"].get("/priorocc/bev", {}).get("visible") for c in three_d)
    assert any(p.startswith("Diagnostic") for p in panels)
