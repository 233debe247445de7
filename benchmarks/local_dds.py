"""Loopback-only Cyclone DDS configuration for tests and benchmarks (not part of the runtime package).

Tests must never put DDS traffic on a real network. ``loopback_env()`` returns environment
variables that confine Cyclone to interface ``lo``, switch multicast off, discover peers by
unicast on 127.0.0.1 only, and pick a domain id unique to the run (so parallel test runs on one
machine do not see each other). Child processes inherit it through ``env=``; the current
process applies it with ``apply_loopback_env()`` *before* creating its first participant
(Cyclone reads ``CYCLONEDDS_URI`` once, when the first domain is created).

Users are not affected: the tools and the node use Cyclone's normal defaults unless
``CYCLONEDDS_URI`` is set by the user.
"""
from __future__ import annotations

import os

# Domain ids ROS 2 / Cyclone accept with the default port mapping: 0..232.
MAX_DOMAIN_ID = 232


def loopback_config(max_participants: int = 50, raw_images: bool = True) -> str:
    """Cyclone DDS XML (schema of Cyclone 0.10/11): interface lo, no multicast, peer 127.0.0.1.

    ``Domain Id="any"`` so the same config serves whatever domain id the process selects
    (``ROS_DOMAIN_ID``). ``ParticipantIndex auto`` + ``MaxAutoParticipantIndex`` give each
    participant on the host its own unicast discovery port that the peer list probes.
    ``raw_images`` (issue 15 #7): 64 kB datagrams on loopback (MaxMessageSize, FragmentSize: a
    4.3 MB raw 1600x900 image is ~70 datagrams instead of ~3300) and a 4 MB receive socket buffer
    (the common ``net.core.rmem_max``), so six raw streams at 10 Hz are not lost in fragments
    (measured in BENCHMARKS.md).
    """
    tuning = ("<MaxMessageSize>65500B</MaxMessageSize><FragmentSize>65000B</FragmentSize>"
              if raw_images else "")
    internal = ("<Internal><SocketReceiveBufferSize min=\"default\" max=\"4MB\"/></Internal>"
                if raw_images else "")
    return (
        "<CycloneDDS><Domain Id=\"any\">"
        "<General><Interfaces><NetworkInterface name=\"lo\"/></Interfaces>"
        f"<AllowMulticast>false</AllowMulticast>{tuning}</General>"
        "<Discovery><Peers><Peer Address=\"127.0.0.1\"/></Peers>"
        "<ParticipantIndex>auto</ParticipantIndex>"
        f"<MaxAutoParticipantIndex>{int(max_participants)}</MaxAutoParticipantIndex>"
        f"</Discovery>{internal}</Domain></CycloneDDS>"
    )


def domain_slice() -> tuple[int, int]:
    """(i, n) from ``PRIOROCC_DDS_DOMAIN_SLICE="i/n"`` (tests/conftest.py sets it in each of n
    parallel pytest workers): worker i draws its domain ids from its own residue class mod n, so
    two workers never share a domain. (0, 1) when unset; a malformed value is an error naming it."""
    raw = os.environ.get("PRIOROCC_DDS_DOMAIN_SLICE", "").strip()
    if not raw:
        return 0, 1
    try:
        i, n = (int(v) for v in raw.split("/"))
    except ValueError:
        raise ValueError(f"PRIOROCC_DDS_DOMAIN_SLICE must be 'i/n' (e.g. '0/2'), got {raw!r}") from None
    if not (n >= 1 and 0 <= i < n and n <= MAX_DOMAIN_ID):
        raise ValueError(f"PRIOROCC_DDS_DOMAIN_SLICE must have 0 <= i < n <= {MAX_DOMAIN_ID}, got {raw!r}")
    return i, n


def unique_domain_id(seed: int | None = None) -> int:
    """A domain id in 1..232 derived from ``seed`` (default: this process id), inside this
    process's slice (:func:`domain_slice`)."""
    seed = os.getpid() if seed is None else int(seed)
    i, n = domain_slice()
    return 1 + i + n * (seed % (MAX_DOMAIN_ID // n))


def loopback_env(domain_id: int | None = None, base: dict | None = None) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) with ``CYCLONEDDS_URI`` set to the loopback
    config and ``ROS_DOMAIN_ID`` to ``domain_id`` (default ``unique_domain_id()``)."""
    env = dict(os.environ if base is None else base)
    env["CYCLONEDDS_URI"] = loopback_config()
    env["ROS_DOMAIN_ID"] = str(unique_domain_id() if domain_id is None else int(domain_id))
    return env


def apply_loopback_env(domain_id: int | None = None) -> dict[str, str]:
    """Set the loopback variables in this process (before any participant exists)."""
    env = loopback_env(domain_id)
    os.environ["CYCLONEDDS_URI"] = env["CYCLONEDDS_URI"]
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    return env
