#!/usr/bin/env python3
"""Writes the checked-in seed inputs in fuzz/seeds/: the starting corpus of each fuzz target,
which `cargo test` also runs through the target's body (tests/tests/fuzz_seeds.rs).

Run from anywhere: python3 fuzz/make_seeds.py. The output is the same on every run."""

import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
U64_MAX = 2**64 - 1


def write(target, name, data):
    folder = os.path.join(HERE, "seeds", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# header_parsers: a selector byte (bits 0-1 the reset format: auto, delta seconds, unix
# seconds, unix millis; bit 7 set for a 200 instead of a 429), then `\n`-separated values for
# retry-after, date, ratelimit, ratelimit-policy, ratelimit-limit, ratelimit-remaining,
# ratelimit-reset, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset,
# x-ratelimit-reset-after, x-ratelimit-used, and round again.
def headers(selector, values):
    return bytes([selector]) + b"\n".join(values)


HUGE = [
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999",
    b"1e400",
    b"3155760000",
    b"18446744073709551615.999999999",
    b"0.0000000000000000001",
    b"9" * 400,
]
WELL_FORMED = [
    b"120",
    b"Sun, 06 Nov 1994 08:49:37 GMT",
    b'"default";r=0;t=30',
    b'"default";q=100;w=60',
    b"100",
    b"0",
    b"30",
    b"100",
    b"0",
    b"1700000060",
    b"30",
    b"100",
]
ODD_NUMBERS = [b"-1", b"+5", b" 7 ", b"1.5", b".5", b"5.", b"1 .5", b"0x10", b"1_000", b"", b" ", b"00000000000000000000001"]
DATES = [
    b"Fri, 31 Dec 9999 23:59:59 GMT",
    b"Wed, 21 Oct 2015 07:28:00 GMT",
    b"Thu, 01 Jan 1970 00:00:00 GMT",
    b"Sunday, 06-Nov-94 08:49:37 GMT",
    b"Sun Nov  6 08:49:37 1994",
    b"Mon, 32 Jan 2024 25:61:61 GMT",
    b"Tue, 14 Nov 2023 22:13:20 UTC",
]
STRUCTURED = [
    b';;;r=-1;t=abc, "";r',
    b'"x";q=0;w=0',
    b'"a";r=1;t=2, "b";r=0;t=99999999999',
    b'"\\\\\\"";r=0;t=1',
    b'"p";r=0;t=1;t=2;r=5',
    b'"p";r=?1;t=@1700000000',
    b'"p";r=0;t=1.5',
    b"100, 100;w=60",
    b'"unterminated;r=0;t=1',
]

write("header_parsers", "empty", b"")
for selector in (0x00, 0x83):
    write("header_parsers", f"selector_only_{selector:02x}", bytes([selector]))
for fmt in range(4):
    write("header_parsers", f"well_formed_{fmt}", headers(fmt, WELL_FORMED))
    write("header_parsers", f"well_formed_200_{fmt}", headers(0x80 | fmt, WELL_FORMED))
    # Every huge number in every header, each format.
    write("header_parsers", f"huge_numbers_{fmt}", headers(fmt, [v for v in HUGE for _ in range(12)]))
    write("header_parsers", f"odd_numbers_{fmt}", headers(fmt, [v for v in ODD_NUMBERS for _ in range(12)]))
# Delays a server may send but the policy clamps (over 5 min, up to a day) or ignores.
CLAMPED = [b"301", b"3600", b"86400", b"86401", b"3600.5", b"1700003600", b"1700003600000"]
for fmt in range(4):
    write("header_parsers", f"long_delays_{fmt}", headers(fmt, [v for v in CLAMPED for _ in range(12)]))
write(
    "header_parsers",
    "long_delays_structured",
    headers(0, [b"Tue, 14 Nov 2023 23:13:20 GMT", b"", b'"p";r=0;t=3600', b"", b"", b"", b"3600"]),
)
write("header_parsers", "dates", headers(0, [d for d in DATES for _ in range(12)]))
write("header_parsers", "structured_fields", headers(0, [v for v in STRUCTURED for _ in range(12)]))
write("header_parsers", "non_utf8", headers(0, [b"\xff\xfe", b"\xc3\x28", b"\x80abc", b"1\xff", b"\xe2\x82", b"\xf0\x9f\x92"] * 4))
write("header_parsers", "control_bytes", headers(1, [b"\x00", b"1\x00", b"\x7f", b"\t1\t", b"1\r", b"\x1b[31m"] * 4))
write("header_parsers", "very_long_number", headers(0, [b"1" * 65536]))
write("header_parsers", "very_long_list", headers(0, [b"", b"", b'"p";r=0;t=1, ' * 5000]))
write("header_parsers", "many_values", headers(2, [str(n).encode() for n in range(2400)]))

# builder_configs: 9-byte steps, a setting byte then a little-endian u64. The byte's value
# modulo 5 picks the layer (limiter, breaker, retry, metrics, stack), its fifth the setting;
# an odd fifth reads a duration in seconds, an even one in nanoseconds.
SETTINGS = {0: 10, 1: 14, 2: 9, 3: 1, 4: 1}


def step(layer, index, value):
    return bytes([index * 5 + layer]) + struct.pack("<Q", value & U64_MAX)


def every_setting(value, odd=None):
    """Every setting of every layer with one value; `odd` picks the duration reading."""
    out = b""
    for layer, count in SETTINGS.items():
        for k in range(count):
            index = k
            if odd is not None and index % 2 != odd:
                index += count  # the same setting, the other parity
            if index * 5 + layer > 255:
                continue
            out += step(layer, index, value)
    return out


def f64(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


NAMES = {
    0: ["per_second", "per_minute", "per_hour", "per", "burst", "wait", "fail_fast", "max_keys", "idle_after", "obey_server"],
    1: [
        "consecutive_failures", "failure_rate", "slow_calls", "count_window", "time_window", "minimum_calls",
        "open_duration", "half_open_permits", "half_open_successes", "half_open_max_wait", "max_keys",
        "idle_after", "no_consecutive_failures", "no_failure_rate",
    ],
    2: ["max_attempts", "exponential_backoff", "linear_backoff", "fixed_backoff", "deadline", "budget", "max_replay_bytes", "no_budget", "seed"],
    3: ["buckets"],
    4: ["attempt_timeout"],
}
LAYERS = ["limit", "breaker", "retry", "metrics", "stack"]
# One setting at 0, 1 and all ones (the largest integer and duration, a NaN float), so
# that each builder's own checks are reached, not only the first that refuses.
for layer, names in NAMES.items():
    assert len(names) == SETTINGS[layer]
    for k, name in enumerate(names):
        for label, value in [("0", 0), ("1", 1), ("max", U64_MAX)]:
            # After a quota of 100/s, without which the limiter refuses first.
            base = step(0, 0, 100)
            write("builder_configs", f"{LAYERS[layer]}_{name}_{label}", base + step(layer, k, value))
write("builder_configs", "empty", b"")
write("builder_configs", "partial_step", b"\x07\x01\x02")
for name, value in [
    ("zero", 0),
    ("one", 1),
    ("u32_max", 2**32 - 1),
    ("u64_max", U64_MAX),
    ("top_bit", 1 << 63),
    ("a_billion", 10**9),
]:
    write("builder_configs", f"{name}_nanos", every_setting(value, odd=0))
    write("builder_configs", f"{name}_seconds", every_setting(value, odd=1))
for name, value in [
    ("nan", float("nan")),
    ("infinity", float("inf")),
    ("minus_infinity", float("-inf")),
    ("minus_zero", -0.0),
    ("subnormal", 5e-324),
    ("largest", 1.7976931348623157e308),
    ("half", 0.5),
    ("above_one", 1.0000000000000002),
]:
    write("builder_configs", f"float_{name}", every_setting(f64(value)))
write(
    "builder_configs",
    "buckets_descending_and_repeated",
    b"".join(step(3, 0, f64(x)) for x in [1.0, 0.5, 0.5, 0.25, float("nan"), float("inf")]),
)
write("builder_configs", "buckets_many", b"".join(step(3, 0, f64(i / 1000)) for i in range(1, 2001)))
rng = random.Random(0x5EA3A11)
write("builder_configs", "random_long", bytes(rng.randrange(256) for _ in range(9 * 3000)))
