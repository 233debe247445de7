"""Foxglove's own MCAP readers (the ``mcap`` and ``mcap-ros2-support`` packages) over a bag this
package wrote: every message of every topic decoded from the schema embedded in the file."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from priorocc_ros.bagio import bag_topics


def decode_with_foxglove_readers(bag: str | Path) -> Counter:
    """{topic: messages decoded} over the bag's .mcap files; AssertionError naming the topic when a
    message does not decode, when a schema is not ros2msg / cdr, or when the counts differ from
    the bag's metadata (a message the reader skipped)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    files = sorted(Path(bag).glob("*.mcap"))
    assert files, f"{bag}: no .mcap file"
    n: Counter = Counter()
    for f in files:
        with open(f, "rb") as fh:
            reader = make_reader(fh, decoder_factories=[DecoderFactory()])
            for schema, channel, message, decoded in reader.iter_decoded_messages():
                assert (schema.encoding, channel.message_encoding) == ("ros2msg", "cdr"), channel.topic
                assert decoded is not None, channel.topic
                n[channel.topic] += 1
    expected = {t: c for t, (_, c) in bag_topics(bag).items()}
    assert dict(n) == expected, (dict(n), expected)
    return n
