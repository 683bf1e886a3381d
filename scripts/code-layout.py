#!/usr/bin/env python3
"""Helpers for scripts/code-layout.sh.

  code-layout.py pages PID BINARY OUT
      writes which pages of BINARY's mappings in process PID are resident
      (from /proc/PID/pagemap), as "MAP start end perms" lines each followed
      by the resident page addresses.
  code-layout.py script OUT PAGES BINARY [PAGES BINARY ...]
      writes the linker script: the functions found on resident code pages in
      every PAGES/BINARY pair (run with different layouts, so a function that
      only shares a page with touched code drops out), in the first binary's
      order, placed in .text.hot before .text.
  code-layout.py extend OUT PAGES BINARY
      adds to OUT the functions on resident pages outside .text.hot of
      BINARY, a build linked with OUT (paths the first runs did not share).

Symbol names are matched as section names (.text.<symbol>, one section per
function). The parts that change with the toolchain or Cargo.lock rather than
with the code are globbed: the legacy hash (17h<16 hex>E), v0 crate
disambiguators (Cs<base62>_) and LTO's .llvm.<n> suffixes. A generic whose
instances differ only in that hash keeps its exact name, so only that instance
is placed.
"""
import collections
import functools
import os
import re
import struct
import subprocess
import sys

PAGE = 4096


def pages(pid, binary, out):
    lines = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            fields = line.split()
            if len(fields) < 6 or os.path.realpath(fields[5]) != binary:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            pagemap.seek(start // PAGE * 8)
            entries = pagemap.read((end - start) // PAGE * 8)
            lines.append(f"MAP {start:x} {end:x} {fields[1]}")
            for i in range((end - start) // PAGE):
                if struct.unpack_from("<Q", entries, i * 8)[0] >> 63 & 1:
                    lines.append(f"{start + i * PAGE:x}")
    if not lines:
        sys.exit(f"code-layout.py: process {pid} has no mapping of {binary}")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


@functools.cache
def functions(binary):
    """(address, size, name) of every function, in address order (nm is run
    once per binary: each is read by several steps)."""
    nm = subprocess.run(["nm", "-n", "-S", "--defined-only", binary],
                        check=True, capture_output=True, text=True).stdout
    result = []
    for line in nm.splitlines():
        fields = line.split(" ", 3)
        if len(fields) == 4 and fields[2] in "tTwW" and int(fields[1], 16) > 0:
            result.append((int(fields[0], 16), int(fields[1], 16), fields[3]))
    return tuple(result)


def touched(pages_file, binary):
    """Names of the functions with a byte on a resident page."""
    resident, base = set(), None
    for line in open(pages_file):
        if line.startswith("MAP"):
            if base is None:
                base = int(line.split()[1], 16)  # the mapping at file offset 0
            continue
        resident.add((int(line, 16) - base) // PAGE)
    names = set()
    for address, size, name in functions(binary):
        if any(p in resident for p in range(address // PAGE, (address + size - 1) // PAGE + 1)):
            names.add(name)
    return names


def unstable_parts_globbed(name):
    name = re.sub(r"\.llvm\.\d+$", "*", name)
    name = re.sub(r"17h[0-9a-f]{16}E$", "17h*", name)
    return re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", name)


def patterns_of(names, binary):
    """Patterns for the named functions of BINARY, in its order, and their size."""
    order = functions(binary)
    same_glob = collections.Counter(unstable_parts_globbed(n) for _, _, n in order)
    patterns, seen, size = [], set(), 0
    for _, length, name in order:
        if name not in names:
            continue
        glob = unstable_parts_globbed(name)
        pattern = glob if same_glob[glob] == 1 else name
        if pattern not in seen:
            seen.add(pattern)
            patterns.append(pattern)
            size += length
    return patterns, size


def script(out, pairs):
    hot = None
    for pages_file, binary in pairs:
        names = touched(pages_file, binary)
        hot = names if hot is None else hot & names
    patterns, size = patterns_of(hot, pairs[0][1])
    if not patterns:
        sys.exit("code-layout.py: no function was found on a resident page")
    write_script(out, patterns, size)


def extend(out, pages_file, binary):
    """Adds the functions a binary linked with OUT ran outside .text.hot: those
    the two first runs did not both touch (paths taken now and then)."""
    hot = section_range(binary, ".text.hot")
    names = touched(pages_file, binary)
    outside = {a_name for address, _, a_name in functions(binary)
               if a_name in names and not hot[0] <= address < hot[1]}
    known = [line.strip()[len("*(.text."):-1] for line in open(out)
             if line.startswith("    *(.text.") and "spillway_code_layout_probe" not in line]
    added, size = patterns_of(outside, binary)
    named = set(known)
    added = [p for p in added if p not in named]
    write_script(out, known + added, hot[1] - hot[0] + size)
    print(f"{out}: {len(added)} functions added")


def section_range(binary, name):
    out = subprocess.run(["readelf", "-SW", binary], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        fields = line.replace("[ ", "[").split()
        if len(fields) > 5 and fields[1] == name:
            address, size = int(fields[3], 16), int(fields[5], 16)
            return address, address + size
    sys.exit(f"code-layout.py: {binary} has no {name} section (not linked with the script?)")


def write_script(out, patterns, size):
    with open(out, "w") as f:
        f.write("/* Made by scripts/code-layout.sh: do not edit.\n"
                f"   {len(patterns)} functions, {size / 2**20:.1f} MiB, that `spillway run`\n"
                "   touched in scripts/bench-run.sh, placed before the rest of .text so\n"
                "   the pages the kernel maps around them hold code that runs.\n"
                "   The first name is the probe of tests/scripts.rs, which checks that\n"
                "   the linker places what the script names. */\n")
        f.write("SECTIONS\n{\n  .text.hot :\n  {\n")
        f.write("    *(.text.spillway_code_layout_probe)\n")
        for pattern in patterns:
            f.write(f"    *(.text.{pattern})\n")
        f.write("  }\n}\nINSERT BEFORE .text;\n")
    print(f"{out}: {len(patterns)} functions, {size / 2**20:.1f} MiB")


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "pages":
        pages(int(sys.argv[2]), os.path.realpath(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) >= 5 and sys.argv[1] == "script" and len(sys.argv) % 2 == 1:
        script(sys.argv[2], list(zip(sys.argv[3::2], sys.argv[4::2])))
    elif len(sys.argv) == 5 and sys.argv[1] == "extend":
        extend(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
