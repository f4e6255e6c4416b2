#!/usr/bin/env python3
"""Writes the 1 KiB Jenkins-like API answer the benchmarks serve.

It has absolute URLs into the upstream, as Jenkins writes them, for the
proxies to rewrite to their own address: 12 jobs (fewer if they do not
fit) and padding to exactly 1024 bytes.

usage: api_json.py FILE UPSTREAM_PORT
"""

import json
import sys


def main():
    path, port = sys.argv[1], sys.argv[2]
    root = f"http://127.0.0.1:{port}/"
    doc = {"_class": "hudson.model.Hudson", "mode": "NORMAL", "nodeDescription": "bench",
           "jobs": [{"_class": "hudson.model.FreeStyleProject", "name": f"job-{i:02d}",
                     "url": f"{root}job/job-{i:02d}/", "color": "blue"} for i in range(12)],
           "url": root, "pad": ""}
    text = json.dumps(doc, separators=(",", ":"))
    while len(text) > 1024:
        doc["jobs"].pop()
        text = json.dumps(doc, separators=(",", ":"))
    doc["pad"] = "x" * (1024 - len(text))
    text = json.dumps(doc, separators=(",", ":"))
    assert len(text) == 1024, len(text)
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
