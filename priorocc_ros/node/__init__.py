"""The parts the occupancy node (``priorocc_ros.node_core.OccupancyNodeCore``) is composed of,
in the order data flows through them:

- ``inputs.InputSubscriptions``: image / camera_info / TF subscriptions (QoS adaptation) and the
  approximate-time synchroniser that turns them into sets;
- ``calibration.CalibrationSource``: CameraInfo history, the TF buffer, the YAML fallback ->
  K and cam2ego of one set;
- ``stages.SetStages``: the runner's three stages (decode, inference, messages + publish);
- ``publishers.OutputPublishers``: the output topics (enabled live by the publish_* parameters);
- ``counters.NodeCounters`` and ``diagnostics.NodeDiagnostics``: what every part counts, and
  /diagnostics.

Each part gets what it needs in its constructor; none imports another's module except for types.
"""
