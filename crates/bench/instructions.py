#!/usr/bin/env python3
"""Instructions per request for benchmark ids of the `layers` bench, counted by callgrind.

    python3 crates/bench/instructions.py stack/baseline stack/seawall_full ...
    python3 crates/bench/instructions.py --wire

Wall-clock medians on a shared virtual machine move by a third between runs; the number of
instructions a request executes does not, so it shows what a change does to the code's own
cost (it does not show what an instruction costs: a locked instruction, a cache miss or a
clock read on a virtual machine count as one). Each id runs for one second under callgrind
(valgrind must be installed); the figure is the instructions inside `seawall_bench::call_once`
(readiness, call, completion) divided by the number of its calls. Dropping the response is
outside that function, so ids that drop it in the timed section do that part uncounted.

The second figure is the locked instructions a request executes inside that function (those
with a `lock` prefix, and `xchg` with memory, which is locked without one): each one waits
for the core's pending stores, so on a virtual machine one of them may cost as much as dozens
of plain instructions. They are counted by a second run with callgrind's per-instruction
counts, matched against the executable's and its libraries' disassembly (`objdump`).

With `--wire`, the same two figures for a request over loopback (the `wire` bin: the bare
hyper-util client, the standard stack over it, tower-resilience's stack over it), counted
inside the bin's `measured` function, which runs the requests and the runtime's work for
them: the client, the server and the runtime, the kernel calls' user side. Building the
client and a warm-up are not counted.
"""

import collections
import json
import re
import subprocess
import sys
import tempfile


def built_executable(command, name):
    """Runs a cargo build `command` and returns the path of the executable `name` it made."""
    out = subprocess.run(command + ["--message-format=json"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable") \
                and message["target"]["name"] == name:
            return message["executable"]
    sys.exit(f"no {name} executable was built")


def bench_binary():
    """Builds the layers bench and returns the path of its executable."""
    return built_executable(
        ["cargo", "bench", "-p", "seawall-bench", "--bench", "layers", "--no-run"], "layers")


def instructions_per_call(binary, bench_id):
    """Runs one id under callgrind; returns (instructions per call, calls)."""
    with tempfile.NamedTemporaryFile(suffix=".callgrind") as profile:
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={profile.name}", binary,
             "--bench", "--profile-time", "1", f"^{bench_id}$"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        tree = subprocess.run(
            ["callgrind_annotate", "--tree=caller", "--inclusive=yes", profile.name],
            capture_output=True, text=True, check=True).stdout.splitlines()
    best = None
    for index, line in enumerate(tree):
        if "*" not in line or "seawall_bench::call_once" not in line:
            continue
        inclusive = int(line.split()[0].replace(",", ""))
        calls, caller = 0, index - 1
        while caller >= 0 and "<" in tree[caller]:
            count = re.search(r"\(([0-9,]+)x\)", tree[caller])
            if count:
                calls += int(count.group(1).replace(",", ""))
            caller -= 1
        if calls and (best is None or inclusive > best[0]):
            best = (inclusive, calls)
    if best is None:
        sys.exit(f"{bench_id}: no calls of seawall_bench::call_once were recorded")
    return best[0] // best[1], best[1]


def executed_per_address(profile):
    """Reads a callgrind profile made with `--dump-instr=yes`: executions of each instruction,
    as {(object file, address): count}. A cost line after `calls=` is the call's inclusive
    cost, not the instruction's own, so it is skipped."""
    names, counts = {}, collections.Counter()
    obj, address, after_call = None, 0, False
    for line in open(profile, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        if line.startswith("events:") and line.split()[1:] != ["Ir"]:
            sys.exit(f"{profile}: expected instructions (Ir) as the only event, got {line}")
        if line.startswith(("ob=", "cob=")):
            value = line.split("=", 1)[1]
            compressed = re.match(r"\((\d+)\)(?: (.*))?$", value)
            if compressed is None:
                # Uncompressed (`--compress-strings=no`): the value is the name.
                name = value
            else:
                if compressed.group(2):
                    names[compressed.group(1)] = compressed.group(2)
                name = names.get(compressed.group(1))
            if line.startswith("ob="):
                obj = name
            continue
        if line.startswith("calls="):
            after_call = True
            continue
        if not line or line[0] not in "0123456789+-*":
            continue
        fields = line.split()
        position = fields[0]
        if position.startswith("0x"):
            address = int(position, 16)
        elif position.startswith("+"):
            address += int(position[1:], 0)
        elif position.startswith("-"):
            address -= int(position[1:], 0)
        if after_call:
            after_call = False
            continue
        if len(fields) >= 3:
            counts[(obj, address)] += int(fields[-1])
    return counts


def locked_addresses(obj):
    """The addresses of `obj`'s locked instructions."""
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj],
                          capture_output=True, text=True, check=True).stdout
    return {int(found.group(1), 16)
            for found in re.finditer(
                r"^\s*([0-9a-f]+):\s+(?:(?:xacquire |xrelease )?lock |xchg[bwlq]?\s+\S*\()",
                text, re.MULTILINE)}


def locked_per_call(binary, bench_id):
    """Runs one id under callgrind, counting only inside `call_once`; returns the locked
    instructions executed per call."""
    with tempfile.NamedTemporaryFile(suffix=".callgrind") as profile:
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--dump-instr=yes",
             "--toggle-collect=seawall_bench::call_once*",
             f"--callgrind-out-file={profile.name}", binary,
             "--bench", "--profile-time", "1", f"^{bench_id}$"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        counts = executed_per_address(profile.name)
    symbols = subprocess.run(["nm", "-C", binary], capture_output=True, text=True,
                             check=True).stdout
    entries = [int(line.split()[0], 16) for line in symbols.splitlines()
               if line.endswith("seawall_bench::call_once")
               or "seawall_bench::call_once<" in line or "seawall_bench::call_once::<" in line]
    calls = max((counts[(binary, entry)] for entry in entries), default=0)
    if not calls:
        sys.exit(f"{bench_id}: no calls of seawall_bench::call_once were recorded")
    return locked_executed(counts) / calls


def locked_executed(counts):
    """How many locked instructions `counts` (from `executed_per_address`) executed."""
    locked = 0
    for obj in {obj for obj, _ in counts if obj and obj.startswith("/")}:
        addresses = locked_addresses(obj)
        locked += sum(count for (o, address), count in counts.items()
                      if o == obj and address in addresses)
    return locked


def wire_per_request(binary, client, requests):
    """Runs the `wire` bin under callgrind, counting inside its `measured` function only;
    returns (instructions, locked instructions) per request."""
    with tempfile.NamedTemporaryFile(suffix=".callgrind") as profile:
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--dump-instr=yes",
             "--toggle-collect=wire::measured*",
             f"--callgrind-out-file={profile.name}", binary, client, str(requests)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        counts = executed_per_address(profile.name)
    if not counts:
        sys.exit(f"{client}: nothing was counted inside wire::measured")
    return sum(counts.values()) / requests, locked_executed(counts) / requests


def wire():
    """Per request over loopback, for each client and beyond the bare client's."""
    binary = built_executable(
        ["cargo", "build", "--release", "-p", "seawall-bench", "--bin", "wire"], "wire")
    print("client\tinstructions\tlocked\tbeyond bare")
    bare = None
    for client in ["bare", "seawall", "tower_resilience"]:
        per_request, locked = wire_per_request(binary, client, 2_000)
        bare = bare or (per_request, locked)
        print(f"{client}\t{per_request:.0f}\t{locked:.1f}\t"
              f"+{per_request - bare[0]:.0f} instructions, +{locked - bare[1]:.1f} locked")


def main():
    ids = sys.argv[1:]
    if not ids:
        sys.exit(__doc__)
    if ids == ["--wire"]:
        wire()
        return
    binary = bench_binary()
    print("id\tinstructions\tlocked\t(calls)")
    for bench_id in ids:
        per_call, calls = instructions_per_call(binary, bench_id)
        locked = locked_per_call(binary, bench_id)
        print(f"{bench_id}\t{per_call}\t{locked:.1f}\t({calls} calls)")


if __name__ == "__main__":
    main()
