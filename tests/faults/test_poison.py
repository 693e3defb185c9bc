"""Fault case 6: a poison stream through the daemon.

Valid events interleaved with messages that must not be learned from, produced with
kafka-python (a client we did not write) in one ordered stream on one partition: empty
messages and tombstones, non-JSON, truncated JSON, 100k-deep nesting, a 2 MB string, invalid
UTF-8, NaN / Infinity / 1e999, empty or missing users, wrong types, unknown types, objects and
arrays as ids, bad timestamps, binary (random bytes, gzip, a schema-registry frame), duplicate
keys, bare `null` and other non-objects. Each names the reason the decoder must give. Beside
them, valid events of odd shape (pretty-printed over several lines, a numeric or non-ASCII
user id, a key spelled with an escape or as a dotted path, a duplicate key the pipeline does
not read, deep nesting and a long string where the pipeline does not look, time 0 or
fractional) that must be learned like any other. The first and the last message are bad, so
the last offset is committed only once its dead letter is acknowledged.

events.max_message_bytes is 512 KiB here, so the 100k-deep documents (200 KB) reach the
parser; the 2 MB one is over it and over what the dead-letter producer may send (librdkafka's
1 MB), so it is dead-lettered as a prefix with truncated / original.size; a 520 KiB one is
over the limit and goes whole.

The end, besides converged() (the clean run is a replay of only the valid events) and a clean
SIGTERM exit:
  - the dead-letter topic holds exactly one record per bad message, in order: its reason
    header is the expected one, detail is set, source.topic / partition / offset point at the
    original, key and value are the original's (a prefix of it when truncated);
  - /metrics counts the decode errors by reason as the stream holds them, every dead letter
    delivered, none failed, and the events processed by type as the valid ones (each exactly
    once); the stop summary counts the dead letters too;
  - the daemon never died (every wait checks it) and its RSS stayed bounded.
"""

import gzip
import json
import random
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

import faults
import harness
from faults import check, log

MAX_MESSAGE = 512 * 1024
BIG = 2 * 1024 * 1024
DEEP = 100000


def obj(*pairs):
    """A JSON object from (key, raw JSON text) pairs, in order, duplicates kept."""
    return ("{" + ",".join('"%s":%s' % (k, v) for k, v in pairs) + "}").encode()


def pairs(ev, drop=(), **raw):
    """The event's fields as (key, raw JSON) pairs, with some replaced by raw text (in
    place, so the order stays) or dropped."""
    out = []
    for k, v in ev.items():
        if k in drop:
            continue
        out.append((k, raw.pop(k) if k in raw else json.dumps(v, separators=(",", ":"))))
    return out + list(raw.items())


def bytes_obj(ev, **raw_bytes):
    """Like obj(pairs(ev, ...)) with raw byte values (invalid UTF-8 inside strings)."""
    marks = {k: "\"@@%s@@\"" % k for k in raw_bytes}
    text = obj(*pairs(ev, **marks))
    for k, b in raw_bytes.items():
        text = text.replace(marks[k].encode(), b)
    return text


def nested(depth):
    return b"[" * depth + b"]" * depth


def poison(ev):
    """(name, key, value, reason) of every bad message, built on the valid event ev (a real
    user and time, so one learned by mistake would change a score or an example count)."""
    u = ev["user_id"]
    key = u.encode()
    whole = obj(*pairs(ev))
    rng = random.Random(6)
    binary = bytes([0xff, 0xfe]) + bytes(rng.randrange(256) for _ in range(300))
    return [
        ("empty", key, b"", "not_json"),
        ("tombstone", key, None, "not_json"),
        ("whitespace", None, b" \t\r\n ", "not_json"),
        ("plain text", b"k", b"hello, world", "not_json"),
        ("truncated", key, whole[:len(whole) // 2], "not_json"),
        ("truncated in a string", key, whole[:whole.index(b'"user_id":"') + 12], "not_json"),
        ("truncated to '{'", key, b"{", "not_json"),
        ("trailing garbage", key, whole + b"xyz", "not_json"),
        ("two objects", key, whole + whole, "not_json"),
        ("trailing comma", key, whole[:-1] + b",}", "not_json"),
        ("single quotes", key, whole.replace(b'"', b"'"), "not_json"),
        ("a comment", key, b"/* view */" + whole, "not_json"),
        ("raw control character", key, bytes_obj(ev, user_id=b'"u\x01x"'), "not_json"),
        ("escaped lone surrogate", key, obj(*pairs(ev, user_id='"\\ud800"')), "not_json"),
        ("null", key, b"null", "not_object"),
        ("array of an event", key, b"[" + whole + b"]", "not_object"),
        ("string", key, b'"view"', "not_object"),
        ("number", key, b"42", "not_object"),
        ("100k-deep array", key, nested(DEEP), "not_json"),
        ("100k-deep in an event", key, obj(*pairs(ev, deep=nested(DEEP).decode())), "not_json"),
        ("2 MB string", key, obj(*pairs(ev, text='"%s"' % ("x" * BIG))), "oversize"),
        ("520 KiB string", key, obj(*pairs(ev, note='"%s"' % ("y" * (520 * 1024)))),
         "oversize"),
        ("invalid UTF-8 user", key, bytes_obj(ev, user_id=b'"' + key + b'\xff"'), "invalid_utf8"),
        ("overlong UTF-8", key, bytes_obj(ev, item_id=b'"\xc0\xaf"'), "invalid_utf8"),
        ("UTF-8 surrogate", key, bytes_obj(ev, note=b'"\xed\xa0\x80"'), "invalid_utf8"),
        ("cut UTF-8 sequence", key, bytes_obj(ev, note=b'"ab\xe2\x82"'), "invalid_utf8"),
        ("NaN", key, obj(*pairs(ev, price="NaN")), "not_json"),
        ("Infinity", key, obj(*pairs(ev, price="Infinity")), "not_json"),
        ("1e999 price", key, obj(*pairs(ev, price="1e999")), "bad_number"),
        ("-1e999 unread", key, obj(*pairs(ev, other="-1e999")), "bad_number"),
        ("1e999 ts", key, obj(*pairs(ev, ts="1e999")), "bad_number"),
        ("30-digit user", key, obj(*pairs(ev, user_id="1" + "0" * 29)), "bad_number"),
        ("empty user", key, obj(*pairs(ev, user_id='""')), "missing_user"),
        ("no user", key, obj(*pairs(ev, drop=("user_id",))), "missing_user"),
        ("null user", key, obj(*pairs(ev, user_id="null")), "missing_user"),
        ("bool user", key, obj(*pairs(ev, user_id="true")), "wrong_type"),
        ("fractional user", key, obj(*pairs(ev, user_id="1.5")), "wrong_type"),
        ("object user", key, obj(*pairs(ev, user_id='{"id":"%s"}' % u)), "wrong_type"),
        ("array user", key, obj(*pairs(ev, user_id='["%s"]' % u)), "wrong_type"),
        ("object item", key, obj(*pairs(ev, item_id='{"sku":1}')), "wrong_type"),
        ("array event_id", key, obj(*pairs(ev, event_id="[]")), "wrong_type"),
        ("number type", key, obj(*pairs(ev, type="3")), "wrong_type"),
        ("object type", key, obj(*pairs(ev, type='{"name":"view"}')), "wrong_type"),
        ("string price", key, obj(*pairs(ev, price='"54.37"')), "wrong_type"),
        ("bool price", key, obj(*pairs(ev, price="true")), "wrong_type"),
        ("number text", key, obj(*pairs(ev, text="5")), "wrong_type"),
        ("string ts", key, obj(*pairs(ev, ts='"%d"' % ev["ts"])), "wrong_type"),
        ("object ts", key, obj(*pairs(ev, ts='{"ms":%d}' % ev["ts"])), "wrong_type"),
        ("bool ts", key, obj(*pairs(ev, ts="true")), "wrong_type"),
        ("negative ts", key, obj(*pairs(ev, ts="-1")), "bad_number"),
        ("ts past int64", key, obj(*pairs(ev, ts="1e19")), "bad_number"),
        ("no type", key, obj(*pairs(ev, drop=("type",))), "missing_type"),
        ("null type", key, obj(*pairs(ev, type="null")), "missing_type"),
        ("unknown type", key, obj(*pairs(ev, type='"teleport"')), "unknown_type"),
        ("type in capitals", key, obj(*pairs(ev, type='"VIEW"')), "unknown_type"),
        ("empty type", key, obj(*pairs(ev, type='""')), "unknown_type"),
        ("user too long", key, obj(*pairs(ev, user_id='"%s"' % ("u" * 2000))),
         "string_too_long"),
        ("NUL in user", key, obj(*pairs(ev, user_id='"%s\\u0000x"' % u)), "bad_string"),
        ("duplicate user", key, obj(*(pairs(ev) + [("user_id", '"%s-2"' % u)])),
         "duplicate_key"),
        ("duplicate type", key, obj(*(pairs(ev) + [("type", '"purchase"')])), "duplicate_key"),
        ("duplicate ts", key, obj(*(pairs(ev) + [("ts", str(ev["ts"] + 1))])), "duplicate_key"),
        ("duplicate context", key, obj(*(pairs(ev) + [("context", '{"device":"tv"}')])),
         "duplicate_key"),
        ("duplicate device", key,
         obj(*pairs(ev, context='{"device":"mobile","device":"tv"}')), "duplicate_key"),
        ("duplicate user, one key escaped", key,
         obj(*(pairs(ev) + [("user\\u005fid", '"%s-2"' % u)])), "duplicate_key"),
        ("duplicate device, one key dotted", key,
         obj(*(pairs(ev) + [("context.device", '"tv"')])), "duplicate_key"),
        ("random bytes", b"\x00\xff", binary, "invalid_utf8"),
        ("gzip", key, gzip.compress(whole, mtime=0), "invalid_utf8"),
        ("schema-registry frame", key, b"\x00\x00\x00\x00\x2a\x04u2\x08view\x02", "not_json"),
        ("NUL bytes", None, b"\x00" * 16, "not_json"),
    ]


def odd_valid(ev):
    """(name, key, value, replay line) of valid events of odd shape: the daemon must learn
    them as replay learns the line (which is the same event on one line)."""
    u = ev["user_id"]
    key = u.encode()
    line = obj(*pairs(ev))
    # one user each, whichever event of the list is picked: the escaped and the raw
    # spelling of the non-ASCII id are the same user
    snowflake = dict(ev, user_id=1234567890123456789)
    accents = dict(ev, user_id="üser-ß-😀")
    return [
        ("pretty-printed", key, json.dumps(ev, indent=2).encode(), line),
        ("numeric user", b"s", obj(*pairs(snowflake)), obj(*pairs(snowflake))),
        ("non-ASCII user", key, json.dumps(accents, ensure_ascii=False).encode(),
         json.dumps(accents, ensure_ascii=False).encode()),
        ("escaped non-ASCII user", key, json.dumps(accents).encode(),
         json.dumps(accents).encode()),
        ("duplicate unread key", key, obj(*(pairs(ev) + [("x", "1"), ("x", "2")])),
         obj(*(pairs(ev) + [("x", "1"), ("x", "2")]))),
        ("deep where nothing is read", key, obj(*pairs(ev, deep=nested(500).decode())),
         obj(*pairs(ev, deep=nested(500).decode()))),
        ("long unread string", key, obj(*pairs(ev, blob='"%s"' % ("z" * 30000))),
         obj(*pairs(ev, blob='"%s"' % ("z" * 30000)))),
        ("null context", key, obj(*pairs(ev, context="null")), obj(*pairs(ev, context="null"))),
        ("number device", key, obj(*pairs(ev, context='{"device":5}')),
         obj(*pairs(ev, context='{"device":5}'))),
        ("fields reversed", key, obj(*reversed(pairs(ev))), obj(*reversed(pairs(ev)))),
        ("escaped key", key, obj(*pairs(ev, drop=("user_id",)), ("user\\u005fid", '"%s"' % u)),
         line),
        ("dotted key", key, obj(*pairs(ev, drop=("context",)), ("context.device", '"tv"')),
         obj(*pairs(ev, context='{"device":"tv"}'))),
        ("epoch ts", key, obj(*pairs(ev, ts="0")), obj(*pairs(ev, ts="0"))),
        ("fractional ts", key, obj(*pairs(ev, ts="%d.75" % ev["ts"])),
         obj(*pairs(ev, ts="%d.75" % ev["ts"]))),
    ]


def read_dead_letters(bootstrap, expected, timeout=30):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, max_partition_fetch_bytes=8 << 20,
                             fetch_max_bytes=16 << 20, consumer_timeout_ms=3000)
    try:
        tp = TopicPartition(faults.DLQ, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        records = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def check_dead_letter(rec, msg):
    name, key, value, reason, offset = msg
    h = {k: v.decode(errors="replace") for k, v in rec.headers}
    what = "%r (offset %d)" % (name, offset)
    check(h.get("reason") == reason, "%s: reason %r, expected %r (detail %r)"
          % (what, h.get("reason"), reason, h.get("detail")))
    check(h.get("detail"), "%s: no detail header" % what)
    check(h.get("source.topic") == faults.TOPIC and h.get("source.partition") == "0" and
          h.get("source.offset") == str(offset), "%s: source headers %s" % (what, h))
    check(rec.key == key, "%s: key %r, expected %r" % (what, rec.key, key))
    if len(value or b"") > 990000:
        check(h.get("truncated") == "true" and h.get("original.size") == str(len(value)),
              "%s: headers %s" % (what, h))
        check(rec.value and 1024 <= len(rec.value) < 1000000 and value.startswith(rec.value),
              "%s: %d bytes, not a prefix under 1 MB" % (what, len(rec.value or b"")))
    else:
        check("truncated" not in h, "%s: truncated (headers %s)" % (what, h))
        check(rec.value == value or (not rec.value and not value),
              "%s: payload changed on the way: %r" % (what, (rec.value or b"")[:60]))
        check(rec.value == value, "%s: value %r, expected %r" % (what, rec.value, value))


def main():
    case = faults.Case("poison", events=3000, users=200, seed=61, dead_letters=True,
                       events_conf="max_message_bytes: %dKiB" % (MAX_MESSAGE // 1024))
    try:
        valid = case.lines[:-1]
        sentinel = case.lines[-1]
        events = [json.loads(line.split(b"\t", 1)[1]) for line in valid]
        # a bad message built on the valid event it follows
        first = poison(events[0])
        n_bad = len(first)
        n_odd = len(odd_valid(events[0]))
        slots = n_bad + n_odd
        stream = []  # (name, key, value, reason or None)
        replay = []  # keyed lines of the valid events, for the clean run
        picks = {round((i + 1) * len(valid) / (slots + 1)): i for i in range(slots)}
        # the first message is bad, and so is the last (after the sentinel): its offset is
        # committed only once dead-lettered
        stream.append(first[1])
        for i, line in enumerate(valid):
            k, v = line.split(b"\t", 1)
            stream.append(("event", k, v, None))
            replay.append(line)
            if i in picks:
                j = picks[i]
                if j < n_bad:
                    stream.append(poison(events[i])[j])
                else:
                    name, key, value, rline = odd_valid(events[i])[j - n_bad]
                    stream.append((name, key, value, None))
                    replay.append(key + b"\t" + rline)
        k, v = sentinel.split(b"\t", 1)
        stream.append(("sentinel", k, v, None))
        replay.append(sentinel)
        stream.append(first[0])
        case.reference(replay)
        bad = [m for m in stream if m[3] is not None]
        log("%d messages: %d valid (%d of odd shape), %d bad of %d kinds"
            % (len(stream), len(stream) - len(bad), n_odd, len(bad), n_bad))

        with harness.RedisServer() as rs, \
                harness.Broker({faults.TOPIC: 1, faults.DLQ: 1}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            with case.daemon(broker, rs) as d:
                rss = faults.RssWatch(d.proc.pid)
                port = case.http_port
                producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                         max_in_flight_requests_per_connection=1, linger_ms=5,
                                         max_request_size=8 << 20, buffer_memory=64 << 20)
                offsets = []
                try:
                    chunk = (len(stream) + 5) // 6
                    for c in range(0, len(stream), chunk):
                        futures = [producer.send(faults.TOPIC, key=key, value=value,
                                                 partition=0)
                                   for _, key, value, _ in stream[c:c + chunk]]
                        producer.flush(60)
                        offsets += [f.get(60).offset for f in futures]
                        d.check_alive()
                        time.sleep(0.3)
                finally:
                    producer.close(10)
                check(offsets == list(range(len(stream))),
                      "offsets out of order: %s..." % offsets[:10])
                faults.converged(case, d, rs.client(), k, messages=len(stream))

                records = read_dead_letters(broker.bootstrap, len(bad))
                dlq_end = k.end_offsets(faults.DLQ)
                check(len(records) == len(bad) and dlq_end == {0: len(bad)},
                      "the dead-letter topic holds %s, read %d, expected %d"
                      % (dlq_end, len(records), len(bad)))
                expected = [m + (off,) for off, m in enumerate(stream) if m[3] is not None]
                wrong = []
                for rec, msg in zip(records, expected):
                    try:
                        check_dead_letter(rec, msg)
                    except AssertionError as exc:
                        wrong.append(str(exc))
                check(not wrong, "%d of %d dead letters wrong:\n  %s"
                      % (len(wrong), len(records), "\n  ".join(wrong)))
                log("%d dead letters: one per bad message, in order, reasons and sources right"
                    % len(records))
                m = faults.metrics(port)
                want = {}
                for msg in bad:
                    want[msg[3]] = want.get(msg[3], 0) + 1
                got = {name: int(m.get('propensityd_decode_errors_total{reason="%s"}' % name, 0))
                       for name in want}
                check(got == want, "decode errors by reason %s, expected %s" % (got, want))
                check(m["propensityd_dead_lettered_total"] == len(bad) and
                      m["propensityd_dead_letter_failures_total"] == 0,
                      "dead-lettered %s, failed %s, expected %d and 0"
                      % (m["propensityd_dead_lettered_total"],
                         m["propensityd_dead_letter_failures_total"], len(bad)))
                log("decode errors by reason: %s" % got)
                types = {}
                for line in replay:
                    t = json.loads(line.split(b"\t", 1)[1])["type"]
                    types[t] = types.get(t, 0) + 1
                seen = {t: int(m.get('propensityd_events_total{type="%s"}' % t, 0))
                        for t in types}
                check(seen == types, "events processed by type %s, the valid ones %s"
                      % (seen, types))
                log("events processed by type = the valid events': %s" % seen)

                faults.end_clean(d, rss)
                check("dead_lettered=%d" % len(bad) in d.log_text(),
                      "the stop summary does not count %d dead letters:\n%s"
                      % (len(bad), d.log_tail()))
    finally:
        case.cleanup()


if __name__ == "__main__":
    sys.exit(faults.run(main))
