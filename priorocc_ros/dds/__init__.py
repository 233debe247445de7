"""Cyclone DDS without ROS 2, wire-compatible with ROS 2 on rmw_cyclonedds_cpp.

- ``names``: ROS 2 <-> DDS topic and type names (``/a/b`` <-> ``rt/a/b``,
  ``pkg/msg/T`` <-> ``pkg::msg::dds_::T_``).
- ``idl_types``: IdlStruct classes generated from rosbags' message definitions.
- ``qos``: the transport interface's QoSProfile -> Cyclone Qos.
- ``participant``: participant, topics, raw-CDR writers/readers, codecs.
- ``graph``: what rmw_cyclonedds_cpp announces to the ROS 2 graph (enclave, type hashes,
  ros_discovery_info).

The loopback-only Cyclone configuration of the tests and benchmarks is theirs: ``benchmarks/local_dds.py``.

Importing this package imports cyclonedds (the ``priorocc_ros.transport`` package does not).
"""
