#!/usr/bin/env python3
"""Turn bench/run's manifest + hyperfine JSON files into a markdown report.

usage: summarize.py RUNDIR

RUNDIR/meta.txt      "key<TAB>value" lines (printed as the method header)
RUNDIR/manifest.tsv  section, case, contender-id, label, status, payload, is_ref
                     status "ok"  -> payload is a hyperfine --export-json file
                     status "na"  -> payload is the reason
RUNDIR/notes.txt     free-form notes appended under the tables (optional)

Only the standard library is used. A contender's payload may list several JSON
files (comma-separated, one per round); statistics are computed over the
union of their raw "times" arrays.
"""
import json
import os
import re
import statistics
import sys

SECTION_TITLES = {
    "startup": "1. Start-up: `/bin/true` per fresh container (warm page cache)",
    "python": "2a. `python3 -c 'import numpy'` per fresh container (warm page cache)",
    "find": "2b. `find /usr -type f | wc -l` per fresh container (warm page cache)",
    "read": "2c. Read every file under /usr in one container (cold: page cache dropped before each run)",
    "bigfile": "2d. Read one 1 GiB file (warm, and cold with the page cache dropped)",
    "first": "4. First containers of an image, and bursts (issue 16)",
    "build": "3. Image conversion: OCI layout -> SquashFS/SIF",
}

# (section, case or None for all cases, numerator, denominator(s) in order of preference, limit)
TARGETS = [
    ("startup", None, "rsing", ["bwrap"], 1.3),
    ("startup", None, "rsing", ["ch-run-sqfs", "ch-run-dir"], 0.25),
    ("python", None, "rsing", ["bwrap"], 1.1),
    ("find", None, "rsing", ["bwrap"], 1.5),
    ("read", None, "rsing", ["kernel-squashfs"], 1.3),
    ("bigfile", None, "rsing", ["kernel-squashfs"], 1.1),
    # issue 16 (case names start so; see bench/run section 4)
    ("first", "import numpy, first container", "rsing", ["bwrap"], 1.5),
    ("first", "find /usr, first container", "rsing", ["bwrap"], 2.0),
    ("first", "burst of 16 × import numpy, server warm", "rsing", ["bwrap"], 1.1),
    ("first", "burst of 16 × import numpy, first containers", "rsing", ["bwrap"], 1.2),
    ("first", "burst of 64 × import numpy, server warm", "rsing", ["bwrap"], 1.1),
    ("first", "burst of 64 × import numpy, first containers", "rsing", ["bwrap"], 1.2),
]


def fmt_t(s):
    if s is None:
        return "–"
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 0.01:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e3:.2f} ms"


def load(paths):
    """Merge the rounds (one hyperfine JSON each) of one contender."""
    times, users, systems, n_u = [], 0.0, 0.0, 0
    # one path per round, comma-separated (a path may itself hold commas: split after ".json")
    for path in re.split(r"(?<=\.json),", paths):
        with open(path) as f:
            r = json.load(f)["results"][0]
        t = r.get("times") or [r["mean"]]
        times.extend(t)
        if r.get("user") is not None:
            users += r["user"] * len(t)
            systems += r["system"] * len(t)
            n_u += len(t)
    return {
        "median": statistics.median(times),
        "mean": statistics.fmean(times),
        "stddev": statistics.stdev(times) if len(times) > 1 else 0.0,
        "min": min(times),
        "max": max(times),
        "runs": len(times),
        "user": users / n_u if n_u else None,
        "system": systems / n_u if n_u else None,
    }


def main():
    rundir = sys.argv[1]
    meta = []
    mpath = os.path.join(rundir, "meta.txt")
    if os.path.exists(mpath):
        with open(mpath) as f:
            for line in f:
                line = line.rstrip("\n")
                if "\t" in line:
                    meta.append(line.split("\t", 1))

    rows = []  # ordered
    with open(os.path.join(rundir, "manifest.tsv")) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            section, case, cid, label, status, payload, is_ref = line.split("\t")
            row = dict(section=section, case=case, cid=cid, label=label,
                       status=status, payload=payload, ref=is_ref == "1", res=None)
            if status == "ok":
                try:
                    row["res"] = load(payload)
                except Exception as e:  # noqa: BLE001
                    row["status"] = "na"
                    row["payload"] = f"bad hyperfine JSON: {e}"
            rows.append(row)

    out = []
    out.append("# rsing benchmark results")
    out.append("")
    for k, v in meta:
        out.append(f"- **{k}**: {v}")
    out.append("")

    # lookup (section, case, cid) -> row
    idx = {(r["section"], r["case"], r["cid"]): r for r in rows}

    sections = []
    for r in rows:
        if r["section"] not in sections:
            sections.append(r["section"])

    for sec in sections:
        out.append(f"## {SECTION_TITLES.get(sec, sec)}")
        out.append("")
        out.append("| Image / case | Contender | Median | Mean ± σ | Min … Max | Runs | User / Sys | Ratio vs ref |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|")
        cases = []
        for r in rows:
            if r["section"] == sec and r["case"] not in cases:
                cases.append(r["case"])
        for case in cases:
            crow = [r for r in rows if r["section"] == sec and r["case"] == case]
            ref = next((r for r in crow if r["ref"]), None)
            refmed = ref["res"]["median"] if ref and ref["res"] else None
            for r in crow:
                lab = r["label"] + (" **(ref)**" if r["ref"] else "")
                if r["res"] is None:
                    out.append(f"| {case} | {lab} | n/a: {r['payload']} | | | | | |")
                    continue
                x = r["res"]
                ratio = f"{x['median'] / refmed:.2f}×" if refmed else "–"
                us = "–"
                if x["user"] is not None:
                    us = f"{fmt_t(x['user'])} / {fmt_t(x['system'])}"
                out.append(
                    f"| {case} | {lab} | **{fmt_t(x['median'])}** | "
                    f"{fmt_t(x['mean'])} ± {fmt_t(x['stddev'])} | "
                    f"{fmt_t(x['min'])} … {fmt_t(x['max'])} | {x['runs']} | {us} | {ratio} |")
        out.append("")

    # targets
    trows = []
    for sec, case_f, num, dens, limit in TARGETS:
        cases = sorted({r["case"] for r in rows if r["section"] == sec},
                       key=lambda c: [r["case"] for r in rows].index(c))
        for case in cases:
            if case_f and not case.startswith(case_f):
                continue
            n = idx.get((sec, case, num))
            d = None
            for dc in dens:
                cand = idx.get((sec, case, dc))
                if cand and cand["res"]:
                    d = cand
                    break
            dname = d["label"] if d else dens[0]
            what = f"{sec} / {case}: rsing ÷ {dname}"
            if not n or not n["res"]:
                why = n["payload"] if n else "not measured"
                trows.append(f"| {what} | pending ({why}) | | ≤ {limit}× | – |")
            elif not d:
                trows.append(f"| {what} | n/a (reference missing) | | ≤ {limit}× | – |")
            else:
                ratio = n["res"]["median"] / d["res"]["median"]
                rmin = n["res"]["min"] / d["res"]["min"]
                ok = "PASS" if ratio <= limit else "FAIL"
                trows.append(f"| {what} | {ratio:.2f}× | {rmin:.2f}× | ≤ {limit}× | {ok} |")
    if trows:
        out.append("## Targets")
        out.append("")
        out.append("| Target | Ratio of medians | Ratio of minimums | Limit | Status (medians) |")
        out.append("|---|---:|---:|---:|---|")
        out.extend(trows)
        out.append("")
        out.append("Status is judged on the ratio of medians. The ratio of minimums is a less noise-sensitive "
                   "view of the uncontended cost, useful when other jobs load the machine.")
        out.append("")

    npath = os.path.join(rundir, "notes.txt")
    if os.path.exists(npath):
        with open(npath) as f:
            notes = [l.rstrip("\n") for l in f if l.strip()]
        if notes:
            out.append("## Notes")
            out.append("")
            for n in notes:
                out.append(f"- {n}")
            out.append("")

    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
