#!/usr/bin/env python3
"""Compare x509-limbo result files (the suite's harness format) with the suite's expectations.

Usage: summarize.py limbo.json results.json [results.json ...]
Prints, per harness: agree, disagree, skipped, invalid chains accepted, valid chains rejected.
With --cases FILE (one case id per line) it also prints each harness's verdict on those cases:
"ok" (agrees with the suite), "accepts" / "rejects" (disagrees), "skip".
"""
import argparse
import json


def load(path, expected):
    d = json.load(open(path))
    if "results" in d:
        return d["harness"], {r["id"]: r["actual_result"] for r in d["results"]}
    # A summary (limbo-rustls-webpki-baseline.json): only its disagreements are listed; its skipped
    # cases are not named, so they count as agreements here and its own totals are printed beside.
    res = dict(expected)
    res.update({x["id"]: x["actual"] for x in d["disagreements"]})
    print(f"note: {d['harness']}: own totals agree {d['agree']}, disagree {d['disagree']}, skipped {d['skipped']}")
    return d["harness"], res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("suite")
    ap.add_argument("results", nargs="+")
    ap.add_argument("--cases")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    expected = {c["id"]: c["expected_result"] for c in json.load(open(a.suite))["testcases"]}
    table, verdicts = [], {}
    for path in a.results:
        name, res = load(path, expected)
        agree = disagree = skipped = false_acc = false_rej = 0
        for cid, exp in expected.items():
            act = res.get(cid, "SKIPPED")
            if act == "SKIPPED":
                skipped += 1
            elif act == exp:
                agree += 1
            else:
                disagree += 1
                if act == "SUCCESS":
                    false_acc += 1
                else:
                    false_rej += 1
        table.append((name, agree, disagree, skipped, false_acc, false_rej))
        verdicts[name] = res
    if a.json:
        print(json.dumps([dict(zip(["harness", "agree", "disagree", "skipped", "false_accepts", "false_rejects"], t)) for t in table]))
    else:
        print(f"{'harness':40} {'agree':>6} {'disagree':>8} {'skipped':>7} {'accepts':>7} {'rejects':>7}")
        for t in table:
            print(f"{t[0]:40} {t[1]:>6} {t[2]:>8} {t[3]:>7} {t[4]:>7} {t[5]:>7}")
    if a.cases:
        for cid in [l.strip() for l in open(a.cases) if l.strip()]:
            cells = []
            for name, res in verdicts.items():
                act = res.get(cid, "SKIPPED")
                cells.append("skip" if act == "SKIPPED" else "ok" if act == expected.get(cid) else ("accepts" if act == "SUCCESS" else "rejects"))
            print(cid, *cells)


if __name__ == "__main__":
    main()
