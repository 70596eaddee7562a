"""QMP objects step by step (object-add, object-del, qom-list /objects)
and their use: a secret made at run time opens a LUKS-encrypted qcow2,
tls-creds-psk and authz-list made at run time serve nbd-server-start with
TLS.  Each step's answer goes to OUT so that two servers can be diffed
(see test-qmp-objects.sh).
Usage: objects.py QMP DIR OUT"""
import json
import sys
import time

import nbd

from jobs_qmp import QMP


def main(qmp, d, out):
    q = QMP(qmp)
    lines = []
    sock = f"{d}/nbd.sock"

    def step(label, name, args=None):
        r = q.execute(name, args)
        if "error" in r:
            ans = f'{r["error"]["class"]}: {r["error"]["desc"]}'
        elif name == "qom-list":
            ans = " ".join(sorted(f'{p["name"]}={p["type"]}'
                                  for p in r["return"]))
        else:
            ans = "ok"
        lines.append(f"{label}: {ans}")

    def export_del(label, eid):
        """block-export-del once the server has seen the last client go
        (both servers answer "still in use" until then)."""
        for _ in range(500):
            r = q.execute("block-export-del", {"id": eid})
            if "still in use" not in r.get("error", {}).get("desc", ""):
                break
            time.sleep(0.01)
        lines.append(f"{label}: " + (f'{r["error"]["class"]}: '
                                     f'{r["error"]["desc"]}'
                                     if "error" in r else "ok"))

    def obj(label, qom_type, oid, **props):
        step(label, "object-add", dict({"qom-type": qom_type, "id": oid},
                                       **props))

    def client(label, user, psk, write=None, certs=None):
        """Connects over TLS-PSK as @user (or with the certificate in
        @certs); the export's multi-conn flag, and the first bytes (after
        writing @write there)."""
        h = nbd.NBD()
        try:
            h.set_tls(nbd.TLS_REQUIRE)
            if certs:
                h.set_tls_certificates(certs)
                h.set_tls_verify_peer(False)
            else:
                h.set_tls_username(user)
                h.set_tls_psk_file(psk)
            h.set_export_name("disk")
            h.connect_unix(sock)
            if write:
                h.pwrite(write, 0)
                h.flush()
            data = h.pread(4, 0)
            ans = (f"ok multi_conn={h.can_multi_conn()} "
                   f"read_only={h.is_read_only()} data={data.hex()}")
            h.shutdown()
        except nbd.Error:
            ans = "refused"
        lines.append(f"{label}: {ans}")

    step("list-empty", "qom-list", {"path": "/objects"})
    step("query-objects", "query-objects")
    obj("secret", "secret", "sec0", data="wrong-password")
    obj("secret-dup", "secret", "sec0", data="x")
    obj("dup-other-type", "iothread", "sec0")
    obj("secret-keyid", "secret", "s1", data="x", keyid="sec0")
    obj("secret-none", "secret", "s1")
    obj("secret-both", "secret", "s1", data="x", file=f"{d}/pw")
    obj("secret-format", "secret", "s1", data="x", format="hex")
    obj("secret-bogus", "secret", "s1", data="x", bogus=1)
    obj("bad-id", "secret", "1s", data="x")
    obj("bad-type", "nope", "s1")
    obj("bad-type-and-id", "nope", "1s")
    obj("secret-file", "secret", "pw", file=f"{d}/pw")
    obj("secret-b64", "secret", "pw64", data="c2VjcmV0MTIz",
        format="base64")
    obj("iothread", "iothread", "io0", **{"poll-max-ns": 1000,
                                          "poll-grow": 2, "poll-shrink": 0,
                                          "aio-max-batch": 4})
    obj("iothread-type", "iothread", "io1", **{"poll-max-ns": "x"})
    obj("iothread-bogus", "iothread", "io1", bogus=1)
    obj("psk", "tls-creds-psk", "tp", endpoint="server", dir=f"{d}/psk")
    obj("psk-nodir", "tls-creds-psk", "tp2", endpoint="server",
        dir=f"{d}/nodir")
    obj("psk-endpoint", "tls-creds-psk", "tp2", endpoint="middle",
        dir=f"{d}/psk")
    obj("psk-verify-type", "tls-creds-psk", "tp2", dir=f"{d}/psk",
        **{"verify-peer": "yes"})
    obj("psk-dup", "tls-creds-psk", "tp", endpoint="server", dir=f"{d}/psk")
    obj("x509", "tls-creds-x509", "tx", endpoint="server", dir=f"{d}/x509")
    obj("x509-no-ca", "tls-creds-x509", "tx2", endpoint="server",
        dir=f"{d}/psk")
    obj("x509-client", "tls-creds-x509", "txc", endpoint="client",
        dir=f"{d}/x509", **{"verify-peer": False})
    obj("authz-simple", "authz-simple", "az",
        identity="O=snapnbd test,CN=alice")
    obj("authz-no-identity", "authz-simple", "az2")
    obj("authz-list", "authz-list", "al", policy="deny",
        rules=[{"match": "al*", "policy": "allow", "format": "glob"},
               {"match": "bob", "policy": "deny"}])
    obj("authz-list-rule", "authz-list", "al2", rules=[{"match": "x"}])
    obj("authz-list-policy", "authz-list", "al2", policy="maybe")
    obj("throttle-group", "throttle-group", "tg",
        limits={"iops-total": 1000})
    step("list", "qom-list", {"path": "/objects"})
    step("list-root", "qom-list", {"path": "/"})

    enc = {"driver": "qcow2", "node-name": "enc",
           "file": {"driver": "file", "filename": f"{d}/enc.qcow2"},
           "encrypt": {"format": "luks", "key-secret": "sec0"}}
    step("open-wrong-secret", "blockdev-add", enc)
    step("del-secret", "object-del", {"id": "sec0"})
    obj("secret-again", "secret", "sec0", data="secret123")
    step("open-secret", "blockdev-add", enc)
    step("del-secret-in-use", "object-del", {"id": "sec0"})
    step("throttle", "blockdev-add", {"driver": "throttle",
                                      "node-name": "thr",
                                      "throttle-group": "tg",
                                      "file": "enc"})
    step("nbd-server-start", "nbd-server-start",
         {"addr": {"type": "unix", "data": {"path": sock}},
          "tls-creds": "tp", "tls-authz": "al"})
    base = {"type": "nbd", "id": "e0", "node-name": "thr", "name": "disk"}
    step("export-no-iothread", "block-export-add",
         dict(base, iothread="nope"))
    step("export-iothread-not-one", "block-export-add",
         dict(base, iothread="tp"))
    step("export-iothread-type", "block-export-add",
         dict(base, iothread=1))
    step("export-fixed-type", "block-export-add",
         dict(base, **{"fixed-iothread": "yes"}))
    # qsd 7.2 aborts (nbd_blockdev_client_closed asserts it runs in the
    # main thread) when a client of an export in an iothread leaves: the
    # iothread export gets no client here
    step("export-iothread", "block-export-add",
         dict(base, id="e1", name="io", iothread="io0",
              **{"fixed-iothread": True}))
    step("export-iothread-del", "block-export-del", {"id": "e1"})
    step("export", "block-export-add", dict(base, writable=True))
    client("alice", "alice", f"{d}/psk/keys.psk", write=b"\x5a" * 65536)
    client("bob", "bob", f"{d}/psk/keys.psk")
    step("del-creds-in-use", "object-del", {"id": "tp"})
    client("alice-after-del-creds", "alice", f"{d}/psk/keys.psk")
    step("del-iothread-in-use", "object-del", {"id": "io0"})
    step("del-group-in-use", "object-del", {"id": "tg"})
    step("del-authz-in-use", "object-del", {"id": "al"})
    client("alice-after-del-authz", "alice", f"{d}/psk/keys.psk")
    step("del-nope", "object-del", {"id": "nope"})
    step("del-id-type", "object-del", {"id": 1})
    export_del("export-del", "e0")
    step("nbd-server-stop", "nbd-server-stop")
    # the server again, without an authz object, single connection
    obj("psk-again", "tls-creds-psk", "tp", endpoint="server",
        dir=f"{d}/psk")
    step("nbd-server-start-1", "nbd-server-start",
         {"addr": {"type": "unix", "data": {"path": sock}},
          "tls-creds": "tp", "max-connections": 1})
    step("export-ro", "block-export-add", dict(base))
    client("bob-single", "bob", f"{d}/psk/keys.psk")
    export_del("export-del-2", "e0")
    step("nbd-server-stop-2", "nbd-server-stop")
    # x509 credentials made at run time, with authz-simple
    step("nbd-server-start-x509", "nbd-server-start",
         {"addr": {"type": "unix", "data": {"path": sock}},
          "tls-creds": "tx", "tls-authz": "az"})
    step("export-x509", "block-export-add", dict(base))
    client("x509-alice", None, None, certs=f"{d}/alice")
    client("x509-bob", None, None, certs=f"{d}/bob")
    step("del-authz-simple", "object-del", {"id": "az"})
    client("x509-alice-after-del-authz", None, None, certs=f"{d}/alice")
    export_del("export-del-3", "e0")
    step("nbd-server-stop-3", "nbd-server-stop")
    step("blockdev-del-thr", "blockdev-del", {"node-name": "thr"})
    step("del-group", "object-del", {"id": "tg"})
    step("blockdev-del-enc", "blockdev-del", {"node-name": "enc"})
    step("list-end", "qom-list", {"path": "/objects"})
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
