"""Cyclone DDS without ROS 2, wire-compatible with ROS 2 on rmw_cyclonedds_cpp.

- ``names``: ROS 2 <-> DDS topic and type names (``/a/b`` <-> ``rt/a/b``,
  ``pkg/msg/T`` <-> ``pkg::msg::dds_::T_``).
- ``idl_types``: IdlStruct classes generated from rosbags' message definitions.
- ``qos``: the transport interface's QoSProfile -> Cyclone Qos.
- ``participant``: participant, topics, raw-CDR writers/readers, codecs.
- ``loopback``: loopback-only Cyclone configuration for tests and benchmarks.
- ``bench`` / ``live``: serialisation benchmark; live record + node + play runs.

Importing this package imports cyclonedds (the ``priorocc_ros.transport`` package does not).
"""
