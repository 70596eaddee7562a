"""nbd-server-add / nbd-server-remove (QEMU's legacy export commands) and
block-export-add with node-qualified bitmaps, step by step; each step's
answer is written to OUT so that two servers can be diffed (see
test-qmp-legacy-export.sh).  Usage: legacy_export.py QMP DIR OUT"""
import json
import sys

from jobs_qmp import QMP


def main(qmp, d, out):
    q = QMP(qmp)
    lines = []

    def step(label, name, args=None):
        r = q.execute(name, args)
        if "error" in r:
            ans = f'{r["error"]["class"]}: {r["error"]["desc"]}'
        elif name == "query-block-exports":
            ans = json.dumps(sorted((e["id"], e["node-name"], e["type"])
                                    for e in r["return"]))
        else:
            ans = "ok"
        lines.append(f"{label}: {ans}")

    step("add-no-server", "nbd-server-add", {"device": "disk"})
    q.cmd("nbd-server-start", {"addr": {"type": "unix",
                                        "data": {"path": f"{d}/nbd.sock"}}})
    step("add-missing-node", "nbd-server-add", {"device": "nope"})
    step("add-disk", "nbd-server-add", {"device": "disk", "writable": True})
    step("add-disk-again", "nbd-server-add", {"device": "disk"})
    step("add-ro-writable", "nbd-server-add",
         {"device": "ro", "name": "ro", "writable": True})
    step("add-enabled-bitmap", "nbd-server-add",
         {"device": "disk", "name": "bm", "bitmap": "b0"})
    q.cmd("block-dirty-bitmap-disable", {"node": "disk", "name": "b0"})
    step("add-bitmap", "nbd-server-add",
         {"device": "disk", "name": "bm", "bitmap": "b0",
          "description": "legacy"})
    step("qualified-missing-node", "block-export-add",
         {"type": "nbd", "id": "q1", "name": "q1", "node-name": "ro",
          "bitmaps": [{"node": "nope", "name": "b0"}]})
    step("qualified-missing-bitmap", "block-export-add",
         {"type": "nbd", "id": "q1", "name": "q1", "node-name": "ro",
          "bitmaps": [{"node": "disk", "name": "zz"}]})
    step("qualified", "block-export-add",
         {"type": "nbd", "id": "q1", "name": "q1", "node-name": "ro",
          "bitmaps": [{"node": "disk", "name": "b1"}]})
    step("query", "query-block-exports")
    step("remove-missing", "nbd-server-remove", {"name": "nope"})
    step("remove-disk", "nbd-server-remove", {"name": "disk"})
    q.wait_event("BLOCK_EXPORT_DELETED", id="disk")
    step("query-after-remove", "query-block-exports")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
