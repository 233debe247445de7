"""``priorocc_replay bags/demo --foxglove`` with viewers: a third-party client (npm
@foxglove/ws-protocol + Foxglove's ROS 2 CDR reader, tests/js) decodes every output channel;
a stalled client, bad clients and 20 clients at once change nothing the node produces.

One replay serves all the viewers (a module fixture: the machine has two cores); a second
replay without --foxglove is the baseline it is compared to."""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("foxglove", reason="foxglove-sdk (requirements.txt) is not installed")

from priorocc_ros.bagio import iter_raw  # noqa: E402
from priorocc_ros.foxglove import DEFAULT_BACKLOG  # noqa: E402
from benchmarks import foxglove_clients as fc  # noqa: E402
from tests.ros_helpers import make_tiny_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "bags" / "demo"
N_MANY = 20


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    return env


def _replay_cmd(ckpt, out, *extra):
    return [sys.executable, "-m", "priorocc_ros.replay", str(DEMO), "--checkpoint", str(ckpt), "--out", str(out),
            "--json", str(out) + ".json", *extra]


def _by_topic(bag) -> dict[str, list[tuple[int, bytes]]]:
    out: dict[str, list] = {}
    for topic, _, t, raw in iter_raw(bag, []):
        out.setdefault(topic, []).append((t, bytes(raw)))
    return out


class _Peak:
    """Peak RSS of a process, sampled every 50 ms until it exits."""

    def __init__(self, proc):
        self.peak = 0
        self.t = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self.t.start()

    def _run(self, proc):
        while proc.poll() is None:
            try:
                self.peak = max(self.peak, fc.rss_bytes(proc.pid))
            except (OSError, ValueError):
                pass
            time.sleep(0.05)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    js = fc.js_client_ready()
    tmp = tmp_path_factory.mktemp("fox")
    ckpt = make_tiny_checkpoint(tmp / "tiny")
    base = subprocess.Popen(_replay_cmd(ckpt, tmp / "base"), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base_peak = _Peak(base)
    base_out = base.communicate(timeout=600)[0]
    assert base.returncode == 0, base_out
    base_sets = json.loads(Path(str(tmp / "base") + ".json").read_text())["node"]["sets_out"]

    proc = subprocess.Popen(_replay_cmd(ckpt, tmp / "served", "--foxglove", "0", "--foxglove-wait", str(N_MANY + 2),
                                         "--foxglove-linger", "120", "--foxglove-rate", "1"),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = _Peak(proc)
    lines: list[str] = []
    port_ready = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "serving on ws://" in line:
                port_ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        return _serve_viewers(proc, reader, lines, port_ready, peak, base_peak, js, tmp, base_sets)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def _serve_viewers(proc, reader, lines, port_ready, peak, base_peak, js, tmp, base_sets):
    """The viewers against the served replay (the fixture kills the replay if this fails)."""
    assert port_ready.wait(300), "".join(lines)
    port = int(next(ln for ln in lines if "serving on ws://" in ln).rsplit(":", 1)[1].split()[0])
    outputs = set(_by_topic(tmp / "base"))

    bad_ports = {}
    for name, data in {"malformed": fc.frame(b"{not json"),
                       "mid-frame": fc.frame(b'{"op":"subscribe","subscriptions":[]}' + b" " * 1000)[:20]}.items():
        s, _ = fc.connect(port)
        bad_ports[name] = s.getsockname()[1]
        s.sendall(data)
        time.sleep(0.2)
        s.close()
    many: list = [None] * N_MANY

    def one(i):  # the channels come once the model is loaded: wait for them
        s, rest = fc.connect(port)
        fc.subscribe_all(s, rest, outputs, timeout=300)
        many[i] = s

    threads = [threading.Thread(target=one, args=(i,)) for i in range(N_MANY)]
    [t.start() for t in threads]
    [t.join(320) for t in threads]
    assert all(many), "not all 20 clients subscribed"
    stalled, rest = fc.connect(port, rcvbuf=4096)
    fc.subscribe_all(stalled, rest, outputs, timeout=300)
    client = subprocess.Popen(["node", str(js / "foxglove_client.js"), f"ws://127.0.0.1:{port}", "150000",
                               "foxglove.sdk.v1", str(base_sets)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    for s in many:  # 20 clients leave while the replay streams to them
        if s is not None:
            s.close()
    try:
        js_out, js_err = client.communicate(timeout=600)
    finally:
        if client.poll() is None:
            client.kill()
    stalled.close()  # the last viewer leaves: the replay's --foxglove-linger ends
    proc.wait(timeout=600)
    reader.join(10)
    summary = json.loads(Path(str(tmp / "served") + ".json").read_text())
    base_summary = json.loads(Path(str(tmp / "base") + ".json").read_text())
    return dict(tmp=tmp, rc=proc.returncode, log="".join(lines), summary=summary, base_summary=base_summary,
                js=json.loads(js_out) if js_out.strip() else {"errors": [js_err]}, js_rc=client.returncode,
                bad_ports=bad_ports, many=many, peak=peak.peak, base_peak=base_peak.peak, outputs=outputs)


def test_third_party_client_decodes_one_message_per_set_on_every_output(served):
    """@foxglove/ws-protocol's client subscribes to every channel and Foxglove's ROS 2 CDR reader
    decodes each message from the channel's ros2msg schema: every output topic of the bag
    (and /diagnostics) arrives, one message per set, stamps equal to the replay's bag.

    The replay plays at the bag's speed (--foxglove-rate 1), as a viewer watches it: at full speed
    on an idle machine the tiny model outran this client and its bounded outbox dropped a set's
    overlay (seen once in a fresh-clone run), which is the documented drop, not a fault.

    Mutations: ``msgs.ros2msg_definition`` cut to its first section -> the client's reader
    cannot decode (its first error ends it, exit 1); ``sink.publish`` removed from the
    replay's recorder -> the client times out with no output message (150 s, not run
    again for that reason)."""
    js = served["js"]
    assert served["rc"] == 0, served["log"][-3000:]
    assert served["js_rc"] == 0 and not js["errors"], js["errors"]
    out = _by_topic(served["tmp"] / "served")
    sets = served["summary"]["node"]["sets_out"]
    assert sets == 6
    for topic in served["outputs"]:
        ch = js["channels"][topic]
        assert (ch["schemaEncoding"], ch["encoding"]) == ("ros2msg", "cdr"), topic
        got = js["messages"][topic]
        bag_stamps = [str(t) for t, _ in out[topic]]
        if not topic.startswith("/priorocc/"):  # the client leaves after the last set: a prefix
            bag_stamps = bag_stamps[:len(got)]
        assert [m["stamp"] for m in got] == bag_stamps, (topic, [ln for ln in served["log"].splitlines()
                                                                  if "WARN" in ln])
        assert [m["logTime"] for m in got] == bag_stamps, topic
        assert not any(m["trailing"] for m in got), topic
        if topic.startswith("/priorocc/"):
            assert len(got) == sets, topic
    assert js["messages"]["/priorocc/markers"][0]["summary"]["frame"] == "base_link"
    assert len(js["messages"]["/tf_static"]) >= 1  # latched, served beside the outputs


def test_viewers_change_nothing_the_node_produces_and_drops_are_counted(served):
    """A stalled client (subscribed, never reads), 20 clients that leave mid-stream, a
    malformed client and one cut mid-frame: the replay exits 0, its sets and every output
    byte equal the replay without --foxglove, its memory stays bounded, the stalled client's
    full outbox is counted in /diagnostics' counters (transport_foxglove_outbox_full), and
    each bad client is logged exactly once.

    Memory: the peak RSS over the baseline's stays within what the clients' bounded outboxes can
    hold (22 clients x 24 messages of the served mean size, + 200 MB); the strict bound on one
    stalled client over many sets is test_foxglove_sink's stalled-client test.

    Mutations: ``message_backlog_size`` left at the SDK default (1024) -> the stalled client's
    outbox never fills in 6 sets, ``transport_foxglove_outbox_full`` assertion fails; the
    once-per-client dedupe removed -> two lines per bad client."""
    assert served["rc"] == 0, served["log"][-3000:]
    s, b = served["summary"]["node"], served["base_summary"]["node"]
    for k in ("sets_in", "sets_out", "sets_dropped", "sets_failed", "incomplete_sets"):
        assert s[k] == b[k], k
    out, base = _by_topic(served["tmp"] / "served"), _by_topic(served["tmp"] / "base")
    for topic in served["outputs"]:
        if topic.startswith("/priorocc/"):
            assert out[topic] == base[topic], topic  # same stamps, same CDR bytes
    assert s.get("transport_foxglove_outbox_full", 0) >= 1, s
    # what the SDK may hold: each of the N_MANY + 2 subscribed clients an outbox of DEFAULT_BACKLOG
    # messages (the tiny random model's voxel clouds are 12.8 MB each: 407-626 MB measured on an
    # idle machine, under 400 MB under load); an outbox holding every message would be 22 x 91 MB
    msgs = [len(raw) for topic in served["outputs"] for _, raw in out[topic]]
    limit = (N_MANY + 2) * DEFAULT_BACKLOG * (sum(msgs) / len(msgs)) + 200e6
    assert served["peak"] - served["base_peak"] < limit, (served["peak"], served["base_peak"], limit)
    log = served["log"]
    for name, port in served["bad_ports"].items():
        mine = [ln for ln in log.splitlines() if "WARNING" in ln and f":{port}" in ln]
        assert len(mine) == 1, (name, mine)
    assert log.count(" connected\n") >= N_MANY + 4
