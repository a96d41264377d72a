#!/usr/bin/env python3
"""Instructions per request for benchmark ids of the `layers` bench, counted by callgrind.

    python3 crates/bench/instructions.py stack/baseline stack/seawall_full ...

Wall-clock medians on a shared virtual machine move by a third between runs; the number of
instructions a request executes does not, so it shows what a change does to the code's own
cost (it does not show what an instruction costs: a locked instruction, a cache miss or a
clock read on a virtual machine count as one). Each id runs for one second under callgrind
(valgrind must be installed); the figure is the instructions inside `seawall_bench::call_once`
(readiness, call, completion) divided by the number of its calls. Dropping the response is
outside that function, so ids that drop it in the timed section do that part uncounted.
"""

import json
import re
import subprocess
import sys
import tempfile


def bench_binary():
    """Builds the layers bench and returns the path of its executable."""
    out = subprocess.run(
        ["cargo", "bench", "-p", "seawall-bench", "--bench", "layers", "--no-run",
         "--message-format=json"],
        capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable") \
                and message["target"]["name"] == "layers":
            return message["executable"]
    sys.exit("no layers bench executable was built")


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


def main():
    ids = sys.argv[1:]
    if not ids:
        sys.exit(__doc__)
    binary = bench_binary()
    for bench_id in ids:
        per_call, calls = instructions_per_call(binary, bench_id)
        print(f"{bench_id}\t{per_call}\t({calls} calls)")


if __name__ == "__main__":
    main()
