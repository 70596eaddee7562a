"""blockdev-reopen, step by step; each step's answer goes to OUT so that
two servers can be diffed (see test-qmp-reopen.sh).
Usage: reopen.py QMP DIR OUT"""
import json
import sys

from jobs_qmp import QMP


def node(base, name, **opts):
    o = {"driver": "qcow2", "node-name": name, "file": f"{name}-file"}
    o.update(opts)
    return o


def main(qmp, d, out):
    q = QMP(qmp)
    lines = []

    def step(label, name, args=None):
        r = q.execute(name, args)
        if "error" in r:
            ans = f'{r["error"]["class"]}: {r["error"]["desc"]}'
        else:
            ans = "ok"
        lines.append(f"{label}: {ans}")

    def state(label):
        for n in sorted(q.cmd("query-named-block-nodes"),
                        key=lambda n: n["node-name"]):
            if n["node-name"] in ("base", "disk"):
                backing = (n.get("backing_file") or "").rsplit("/", 1)[-1]
                lines.append(f'{label}: {n["node-name"]} ro={n["ro"]} '
                             f'detect_zeroes={n["detect_zeroes"]} '
                             f'backing={backing}')

    for name, extra in (("base", {"read-only": True}),
                        ("disk", {"backing": "base"})):
        q.cmd("blockdev-add", {"driver": "file", "node-name": f"{name}-file",
                               "filename": f"{d}/{name}.qcow2"})
        q.cmd("blockdev-add", node(d, name, **extra))
    q.cmd("nbd-server-start", {"addr": {"type": "unix",
                                        "data": {"path": f"{d}/nbd.sock"}}})
    q.cmd("block-export-add", {"type": "nbd", "id": "e", "node-name": "disk",
                               "writable": True})
    state("start")
    step("base-rw", "blockdev-reopen",
         {"options": [node(d, "base", **{"read-only": False})]})
    state("base-rw")
    step("bitmap-on-writable", "block-dirty-bitmap-add",
         {"node": "base", "name": "bb", "persistent": True})
    step("base-ro", "blockdev-reopen",
         {"options": [node(d, "base", **{"read-only": True})]})
    state("base-ro")
    step("backing-missing", "blockdev-reopen",
         {"options": [node(d, "disk")]})
    step("driver", "blockdev-reopen",
         {"options": [node(d, "disk", driver="raw", backing="base")]})
    step("file", "blockdev-reopen",
         {"options": [node(d, "disk", file="base-file", backing="base")]})
    step("exported-ro", "blockdev-reopen",
         {"options": [node(d, "disk", backing="base",
                           **{"read-only": True})]})
    step("dz-unmap-no-discard", "blockdev-reopen",
         {"options": [node(d, "disk", backing="base",
                           **{"detect-zeroes": "unmap"})]})
    step("dz-unmap", "blockdev-reopen",
         {"options": [node(d, "disk", backing="base", discard="unmap",
                           **{"detect-zeroes": "unmap"})]})
    state("dz-unmap")
    step("no-node", "blockdev-reopen",
         {"options": [{"driver": "qcow2", "node-name": "nope",
                       "file": "x"}]})
    step("no-node-name", "blockdev-reopen",
         {"options": [{"driver": "qcow2", "file": "disk-file"}]})
    step("bad-option", "blockdev-reopen",
         {"options": [node(d, "disk", backing="base", bogus=1)]})
    # qcow2's runtime options: checked as at open, applied to the caches
    step("cache-size", "blockdev-reopen",
         {"options": [node(d, "disk", backing="base",
                           **{"cache-size": 131072,
                              "lazy-refcounts": True,
                              "cache-clean-interval": 30})]})
    step("cache-too-big", "blockdev-reopen",
         {"options": [node(d, "disk", backing="base",
                           **{"cache-size": 100, "l2-cache-size": 200})]})
    step("entry-size", "blockdev-reopen",
         {"options": [node(d, "disk", backing="base",
                           **{"l2-cache-entry-size": 1000})]})
    step("interval", "blockdev-reopen",
         {"options": [node(d, "disk", backing="base",
                           **{"cache-clean-interval": -1})]})
    step("cache-default", "blockdev-reopen",
         {"options": [node(d, "disk", backing="base")]})
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
