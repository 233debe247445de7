"""The node's output topics (docs/design.md): one publisher per enabled output
(``pipeline.output_topics``), /diagnostics apart (``diagnostics.NodeDiagnostics``)."""
from __future__ import annotations

import threading
from typing import Any

from priorocc_ros.pipeline import PipelineOptions, output_topics
from priorocc_ros.transport.base import RELIABLE_QOS, Transport


class OutputPublishers:
    def __init__(self, transport: Transport, cameras: tuple[str, ...], opts: PipelineOptions):
        self.t = transport
        self.cameras = cameras
        self.opts = opts
        self._lock = threading.Lock()
        self._made: dict[str, Any] = {}  # every publisher made so far (an output enabled again reuses it)
        self.outputs: dict[str, tuple[str, str]] = {}  # enabled: {key: (type, topic)}
        self.pubs: dict[str, Any] = {}  # enabled: {key: publisher}
        self.refresh()

    def refresh(self) -> None:
        """Follow the publish_* flags of ``opts`` (changed live): an enabled output gets its
        publisher (made on first use), a disabled one publishes nothing from now on, even for a
        set whose messages are being built."""
        with self._lock:
            self.outputs = output_topics(self.cameras, self.opts)
            for key, (tn, topic) in self.outputs.items():
                if key not in self._made:
                    self._made[key] = self.t.create_publisher(tn, topic, RELIABLE_QOS)
            self.pubs = {key: self._made[key] for key in self.outputs}

    def publish(self, messages: dict[str, Any]) -> None:
        """Publish each message of a set on its output's publisher (keys without one are skipped)."""
        with self._lock:
            pubs = dict(self.pubs)
        for key, msg in messages.items():
            pub = pubs.get(key)
            if pub is not None:
                pub.publish(msg)

    def published_topics(self) -> dict[str, str]:
        """{resolved output topic: type} of the enabled outputs."""
        with self._lock:
            return {self.t.resolve_topic(topic): tn for tn, topic in self.outputs.values()}
