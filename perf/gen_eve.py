#!/usr/bin/env python3
# gen_eve.py: deterministic (seeded) generator of realistic Suricata EVE JSON lines for benchmarks.
"""Writes Suricata eve.json lines: flow ~40%, dns ~25%, http ~10%, tls ~10%, alert ~10%,
fileinfo ~5%, about 640 bytes a line on average.

Every event belongs to one of --flows flow tuples (a pre-built pool): events of one flow share
its 5-tuple, flow_id and community_id; flow events always use the flow's first (client to
server) direction, about half of the other events use the reply direction (src/dest swapped).
A few flow_ids sit just below 2^53-1 to exercise exact integer handling. Timestamps increase.
The same arguments always give the same bytes (python3 stdlib only; no json.dumps per event).

  gen_eve.py --events 1000000 --seed 1 -o eve.json
  gen_eve.py --events 10000 --check -o /dev/null     # also parses the lines and checks them
"""

import argparse
import base64
import hashlib
import ipaddress
import json
import random
import socket
import struct
import sys
import time

BASE_TS = 1709294400  # 2024-03-01T12:00:00Z
FLOW_ID_MAX = 2 ** 51
JS_MAX = 2 ** 53 - 1
TYPE_WEIGHTS = [("flow", 40), ("dns", 25), ("http", 10), ("tls", 10), ("alert", 10), ("fileinfo", 5)]

SUBS = ["www", "api", "cdn", "mail", "static", "login", "update", "img", "edge", "assets",
        "auth", "events", "telemetry", "download", "m", "app", "portal", "files", "ws", "gateway"]
BASES = ["example", "contoso", "acme-corp", "github", "googleapis", "microsoft", "akamaihd",
         "cloudfront", "office365", "mozilla", "ubuntu", "debian", "wikipedia", "amazonaws",
         "fastly", "cloudflare", "gstatic", "doubleclick", "apple", "icloud", "slack", "zoom",
         "salesforce", "dropbox", "adobe", "windowsupdate", "digicert", "letsencrypt", "sentry",
         "newrelic", "okta", "atlassian", "jsdelivr", "unpkg", "yahoo", "bing", "linkedin"]
TLDS = ["com", "net", "org", "io", "de", "co.uk", "cloud"]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:123.0) Gecko/20100101 Firefox/123.0",
    "Microsoft-CryptoAPI/10.0",
    "Windows-Update-Agent/10.0.10011.16384 Client-Protocol/2.71",
    "curl/8.5.0",
    "Wget/1.21.4",
    "python-requests/2.31.0",
    "Debian APT-HTTP/1.3 (2.6.1)",
    "Go-http-client/1.1",
    "okhttp/4.12.0",
]
CONTENT_TYPES = ["text/html; charset=UTF-8", "application/json", "application/javascript",
                 "image/png", "image/jpeg", "text/css", "application/octet-stream",
                 "application/x-x509-ca-cert", "application/pkix-crl", "text/plain"]
METHODS = ["GET"] * 8 + ["POST"] * 2 + ["HEAD", "PUT"]
STATUSES = [200] * 12 + [204, 206, 301, 302, 304, 304, 400, 403, 404, 404, 500, 503]
PATH_WORDS = ["api", "v1", "v2", "static", "js", "css", "img", "assets", "download", "update",
              "users", "items", "search", "login", "session", "health", "metrics", "pkg",
              "dists", "pool", "main", "crl", "ocsp", "media", "content", "config"]
EXTS = [".html", ".js", ".css", ".png", ".jpg", ".json", ".gif", ".exe", ".deb", ".zip", ".crl", ""]
FILE_MAGIC = {
    ".html": "HTML document, ASCII text, with very long lines",
    ".js": "ASCII text, with very long lines (65536), with no line terminators",
    ".css": "ASCII text",
    ".png": "PNG image data, 256 x 256, 8-bit/color RGBA, non-interlaced",
    ".jpg": "JPEG image data, JFIF standard 1.01, resolution (DPI), density 72x72",
    ".json": "JSON data",
    ".gif": "GIF image data, version 89a, 1 x 1",
    ".exe": "PE32 executable (GUI) Intel 80386, for MS Windows",
    ".deb": "Debian binary package (format 2.0), with control.tar.xz, data compression xz",
    ".zip": "Zip archive data, at least v2.0 to extract, compression method=deflate",
    ".crl": "data",
    "": "data",
}
ISSUERS = [
    "C=US, O=Let's Encrypt, CN=R3",
    "C=US, O=Let's Encrypt, CN=E1",
    "C=US, O=DigiCert Inc, CN=DigiCert Global G2 TLS RSA SHA256 2020 CA1",
    "C=US, O=Google Trust Services LLC, CN=GTS CA 1C3",
    "C=US, O=Amazon, CN=Amazon RSA 2048 M02",
    "C=GB, ST=Greater Manchester, L=Salford, O=Sectigo Limited, CN=Sectigo RSA Domain Validation Secure Server CA",
    "C=US, O=Microsoft Corporation, CN=Microsoft Azure TLS Issuing CA 05",
    "C=BE, O=GlobalSign nv-sa, CN=GlobalSign Atlas R3 DV TLS CA 2023 Q4",
]
SIGNATURES = [
    # (sid, rev, signature, category, severity, signature_severity, created, updated)
    (2013028, 7, "ET POLICY curl User-Agent Outbound", "Attempted Information Leak", 2, "Informational", "2011_06_14", "2023_11_13"),
    (2013504, 6, "ET POLICY GNU/Linux APT User-Agent Outbound likely related to package management", "Not Suspicious Traffic", 3, "Informational", "2011_08_31", "2020_04_22"),
    (2027390, 4, "ET USER_AGENTS Microsoft Device Metadata Retrieval Client User-Agent", "Unknown Traffic", 3, "Informational", "2019_05_28", "2020_09_17"),
    (2014726, 59, "ET POLICY Outdated Windows Flash Version IE", "Potential Corporate Privacy Violation", 1, "Minor", "2012_05_09", "2023_04_26"),
    (2210054, 1, "SURICATA STREAM excessive retransmissions", "Generic Protocol Command Decode", 3, "Informational", "2014_11_18", "2014_11_18"),
    (2200074, 2, "SURICATA TCPv4 invalid checksum", "Generic Protocol Command Decode", 3, "Informational", "2012_02_22", "2012_02_22"),
    (2221010, 1, "SURICATA HTTP unable to match response to request", "Generic Protocol Command Decode", 3, "Informational", "2015_10_20", "2015_10_20"),
    (2230010, 1, "SURICATA TLS invalid record/traffic", "Generic Protocol Command Decode", 3, "Informational", "2015_10_09", "2015_10_09"),
    (2019401, 22, "ET POLICY Vulnerable Java Version 1.8.x Detected", "Potential Corporate Privacy Violation", 2, "Minor", "2014_10_10", "2023_08_29"),
    (2027865, 4, "ET INFO Observed DNS Query to .cloud TLD", "Potentially Bad Traffic", 2, "Informational", "2019_08_13", "2020_09_17"),
    (2024897, 5, "ET USER_AGENTS Go HTTP Client User-Agent", "Misc activity", 3, "Informational", "2017_10_23", "2022_05_03"),
    (2001219, 20, "ET SCAN Potential SSH Scan", "Attempted Information Leak", 2, "Major", "2010_07_30", "2019_07_26"),
    (2018959, 4, "ET POLICY PE EXE or DLL Windows file download HTTP", "Potential Corporate Privacy Violation", 1, "Major", "2014_08_19", "2017_02_01"),
    (2100498, 7, "GPL ATTACK_RESPONSE id check returned root", "Potentially Bad Traffic", 2, "Major", "2010_09_23", "2019_07_26"),
    (2008578, 9, "ET SCAN Sipvicious Scan", "Attempted Information Leak", 2, "Minor", "2010_07_30", "2023_03_10"),
    (2033966, 3, "ET INFO Observed Let's Encrypt Certificate for Suspicious TLD (.xyz)", "Misc activity", 3, "Informational", "2021_09_16", "2023_01_30"),
    (2035595, 2, "ET MALWARE Possible Cobalt Strike Beacon Activity", "A Network Trojan was detected", 1, "Critical", "2022_03_24", "2024_01_12"),
    (2022973, 3, "ET POLICY Possible Kali Linux hostname in DHCP Request Packet", "Potential Corporate Privacy Violation", 1, "Minor", "2016_07_13", "2022_05_03"),
]
TARGETS = ["Client_Endpoint", "Server", "Client_and_Server", "Web_Server"]
DEPLOY = ["Perimeter", "Internal", "Datacenter"]
FLOW_STATES = [("closed", "timeout"), ("closed", "timeout"), ("established", "timeout"),
               ("new", "timeout"), ("closed", "shutdown"), ("established", "forced")]
IFACES = ["eth0", "eth0", "eth1", "ens3f0"]


def fmt_ts(us):
    """Suricata's timestamp format for a microsecond epoch value."""
    s, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%06d+0000" % frac


def community_id(proto_num, sip, dip, sport, dport, seed=0):
    """Community ID v1 ("1:" + base64(sha1(...))) of a flow tuple."""
    fam = socket.AF_INET6 if ":" in sip else socket.AF_INET
    sa, da = socket.inet_pton(fam, sip), socket.inet_pton(fam, dip)
    if not (sa < da or (sa == da and sport < dport)):
        sa, da, sport, dport = da, sa, dport, sport
    data = struct.pack("!H", seed) + sa + da + struct.pack("!BBHH", proto_num, 0, sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()


class Flow:
    __slots__ = ("fid", "cid", "fwd", "rev", "kind", "proto", "app", "host", "ua", "tls", "sport",
                 "dport", "sip", "dip", "iface")


def build_pool(rng, nflows):
    """The per-flow data: tuple strings in both directions, ids, and app-layer constants."""
    domains = []
    for i in range(4000):
        base = BASES[i % len(BASES)]
        tld = TLDS[rng.randrange(len(TLDS))] if i >= len(BASES) else "com"
        if i % 5 == 4:
            sub = "%08x.%s" % (rng.getrandbits(32), rng.choice(SUBS))
        else:
            sub = rng.choice(SUBS)
        domains.append("%s.%s.%s" % (sub, base, tld))
    clients4 = ["10.%d.%d.%d" % (rng.randrange(0, 4), rng.randrange(0, 256), rng.randrange(1, 255))
                for _ in range(3000)] + \
               ["192.168.%d.%d" % (rng.randrange(0, 8), rng.randrange(2, 255)) for _ in range(1000)]
    clients6 = [str(ipaddress.IPv6Address((0x20010db8 << 96) | (0xa << 80) | rng.getrandbits(64)))
                for _ in range(300)]
    servers4 = []
    for _ in range(6000):
        a = rng.choice([13, 20, 23, 34, 35, 52, 54, 64, 93, 104, 142, 151, 172, 185, 199, 203])
        servers4.append("%d.%d.%d.%d" % (a, rng.randrange(0, 256), rng.randrange(0, 256), rng.randrange(1, 255)))
    servers6 = [str(ipaddress.IPv6Address((0x2a00 << 112) | rng.getrandbits(96))) for _ in range(500)]
    resolvers4 = ["10.0.0.53", "10.0.1.53", "192.168.0.1", "8.8.8.8", "1.1.1.1"]
    resolvers6 = ["2001:db8::53", "2606:4700:4700::1111"]

    kinds = ["dns"] * 35 + ["http"] * 20 + ["tls"] * 25 + ["other"] * 20
    flows = []
    used_ids = set()
    for i in range(nflows):
        f = Flow()
        kind = ("dns", "http", "tls", "other")[i] if i < 4 else kinds[rng.randrange(100)]
        v6 = rng.random() < 0.06
        f.sip = rng.choice(clients6 if v6 else clients4)
        f.sport = rng.randrange(1024, 65536)
        f.proto, f.app, f.host, f.ua, f.tls = "TCP", "", "", "", ""
        if kind == "dns":
            f.dip, f.dport, f.proto, f.app = rng.choice(resolvers6 if v6 else resolvers4), 53, "UDP", "dns"
            if rng.random() < 0.05:
                f.proto = "TCP"
        elif kind == "http":
            f.dip = rng.choice(servers6 if v6 else servers4)
            f.dport, f.app = rng.choice([80, 80, 80, 8080, 8000]), "http"
            f.host = domains[int(len(domains) * rng.random() ** 2)]
            f.ua = rng.choice(USER_AGENTS)
        elif kind == "tls":
            f.dip = rng.choice(servers6 if v6 else servers4)
            f.dport, f.app = rng.choice([443] * 9 + [8443]), "tls"
            f.host = domains[int(len(domains) * rng.random() ** 2)]
            nb = BASE_TS - rng.randrange(1, 80) * 86400
            na = nb + rng.choice([90, 90, 90, 365, 397]) * 86400
            serial = ":".join("%02X" % rng.randrange(256) for _ in range(rng.choice([16, 18])))
            fp = ":".join("%02x" % rng.randrange(256) for _ in range(20))
            ver = rng.choice(["TLS 1.3", "TLS 1.3", "TLS 1.2"])
            f.tls = ('{"subject":"CN=%s","issuerdn":"%s","serial":"%s","fingerprint":"%s","sni":"%s",'
                     '"version":"%s","notbefore":"%s","notafter":"%s","ja3":{"hash":"%032x"},'
                     '"ja3s":{"hash":"%032x"}}') % (
                f.host, rng.choice(ISSUERS), serial, fp, f.host, ver,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(nb)),
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(na)),
                rng.getrandbits(128), rng.getrandbits(128))
        else:
            r = rng.random()
            f.dip = rng.choice(servers6 if v6 else servers4)
            if r < 0.1 and not v6:
                f.proto, f.app = "ICMP", ""
            elif r < 0.3:
                f.proto, f.dport, f.app = "UDP", rng.choice([123, 443, 500, 1194, 3478, 5353]), ""
                if f.dport == 443:
                    f.app = "quic"
            else:
                f.dport = rng.choice([22, 25, 445, 993, 3389, 5222, 8883])
                f.app = {22: "ssh", 25: "smtp", 445: "smb", 993: "tls", 3389: "rdp"}.get(f.dport, "failed")
                if f.dport in (445, 3389):
                    f.dip = rng.choice(clients6 if v6 else clients4)
        f.kind = kind
        if f.proto == "ICMP":
            f.sport, f.dport = 8, 0
            f.fwd = ('"src_ip":"%s","dest_ip":"%s","proto":"ICMP","icmp_type":8,"icmp_code":0,'
                     '"response_icmp_type":0,"response_icmp_code":0') % (f.sip, f.dip)
            f.rev = ('"src_ip":"%s","dest_ip":"%s","proto":"ICMP","icmp_type":0,"icmp_code":0') % (f.dip, f.sip)
            f.cid = community_id(1, f.sip, f.dip, 8, 0)
        else:
            f.fwd = '"src_ip":"%s","src_port":%d,"dest_ip":"%s","dest_port":%d,"proto":"%s"' % (
                f.sip, f.sport, f.dip, f.dport, f.proto)
            f.rev = '"src_ip":"%s","src_port":%d,"dest_ip":"%s","dest_port":%d,"proto":"%s"' % (
                f.dip, f.dport, f.sip, f.sport, f.proto)
            f.cid = community_id(6 if f.proto == "TCP" else 17, f.sip, f.dip, f.sport, f.dport)
        # flow ids: mostly below 2^51 as Suricata's; about 1% just below 2^53-1.
        while True:
            if rng.random() < 0.01:
                fid = JS_MAX - rng.randrange(0, 4096)
            else:
                fid = rng.randrange(1, FLOW_ID_MAX)
            if fid not in used_ids:
                used_ids.add(fid)
                break
        f.fid = fid
        f.iface = IFACES[i % len(IFACES)]
        flows.append(f)
    return flows, domains


def signature_strings():
    out = []
    for sid, rev, sig, cat, sev, ssev, created, updated in SIGNATURES:
        meta = ('{"affected_product":["Any"],"attack_target":["%s"],"created_at":["%s"],'
                '"deployment":["%s"],"signature_severity":["%s"],"updated_at":["%s"]}') % (
            TARGETS[sid % len(TARGETS)], created, DEPLOY[sid % len(DEPLOY)], ssev, updated)
        out.append('"gid":1,"signature_id":%d,"rev":%d,"signature":"%s","category":"%s","severity":%d,"metadata":%s'
                   % (sid, rev, sig.replace('"', '\\"'), cat, sev, meta))
    return out


def generate(args, write):
    """Generates args.events lines and hands them to write() in chunks; returns (bytes, counts)."""
    rng = random.Random(args.seed)
    flows, domains = build_pool(rng, args.flows)
    by_kind = {"dns": [], "http": [], "tls": [], "all": flows}
    for f in flows:
        if f.kind in by_kind:
            by_kind[f.kind].append(f)
    sigs = signature_strings()
    types = [t for t, _ in TYPE_WEIGHTS]
    weights = [w for _, w in TYPE_WEIGHTS]
    rnd = rng.random
    rbits = rng.getrandbits
    rrange = rng.randrange

    def pick(pool):
        return pool[int(len(pool) * rnd() * rnd())]  # skewed: a few busy flows, a long tail

    us = BASE_TS * 1_000_000 + 123456
    # --span: the events' timestamps cover about SPAN seconds (mean gap span/events); by
    # default, gaps of 1 + up to 400 us (mean ~100 us), as before the option existed.
    eph = args.ephemeral
    gap = 400 if args.span is None else max(4, int(args.span * 1_000_000 / max(1, args.events) * 4))
    sec_cache = [-1, ""]
    counts = dict.fromkeys(types, 0)
    total = 0
    buf = []
    tx_ids = {}
    done = 0
    while done < args.events:
        n = min(20000, args.events - done)
        batch_types = rng.choices(types, weights, k=n)
        for et in batch_types:
            us += 1 + int(rnd() * rnd() * gap)
            s, frac = divmod(us, 1_000_000)
            if s != sec_cache[0]:
                sec_cache[0] = s
                sec_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
            ts = "%s.%06d+0000" % (sec_cache[1], frac)
            if et == "flow":
                f = pick(flows)
                age = int(rnd() * rnd() * 600)
                start_us = us - age * 1_000_000 - rrange(1_000_000)
                end_us = us - rrange(1_000_000) - 60_000_000 if age > 61 else us - rrange(1_000_000) // 10
                if end_us <= start_us:
                    end_us = start_us + 1
                pts = 1 + int(rnd() * rnd() * 200)
                ptc = int(pts * (0.4 + rnd()))
                bts = pts * (60 + rrange(600))
                btc = ptc * (60 + rrange(1400))
                state, reason = FLOW_STATES[rrange(len(FLOW_STATES))]
                alerted = "true" if rnd() < 0.03 else "false"
                if f.proto == "TCP":
                    extra = (',"tcp":{"tcp_flags":"1b","tcp_flags_ts":"1b","tcp_flags_tc":"1b","syn":true,'
                             '"fin":true,"psh":true,"ack":true,"state":"%s"}') % state
                else:
                    extra = ""
                app = ',"app_proto":"%s"' % f.app if f.app else ""
                line = ('{"timestamp":"%s","flow_id":%d,"in_iface":"%s","event_type":"flow",%s%s,'
                        '"flow":{"pkts_toserver":%d,"pkts_toclient":%d,"bytes_toserver":%d,"bytes_toclient":%d,'
                        '"start":"%s","end":"%s","age":%d,"state":"%s","reason":"%s","alerted":%s},'
                        '"community_id":"%s"%s,"host":"sensor-01"}\n') % (
                    ts, f.fid, f.iface, f.fwd, app, pts, ptc, bts, btc, fmt_ts(start_us), fmt_ts(end_us),
                    age, state, reason, alerted, f.cid, extra)
            elif et == "dns":
                f = pick(by_kind["dns"])
                tx = tx_ids.get(f.fid, 0)
                tx_ids[f.fid] = tx + 1
                name = domains[int(len(domains) * rnd() * rnd())]
                r = rnd()
                rrtype = "A" if r < 0.6 else "AAAA" if r < 0.85 else "HTTPS" if r < 0.93 else "PTR" if r < 0.97 else "TXT"
                qid = rrange(65536)
                if rnd() < 0.5:
                    tup = f.fwd
                    dns = ('{"type":"query","id":%d,"rrname":"%s","rrtype":"%s","tx_id":%d,"opcode":0}'
                           % (qid, name, rrtype, tx))
                else:
                    tup = f.rev
                    if rrtype == "AAAA":
                        ans = ["2606:4700:%x::%x" % (rbits(16), rbits(16)) for _ in range(1 + rrange(2))]
                    elif rrtype == "A":
                        ans = ["%d.%d.%d.%d" % (104 + rrange(80), rrange(256), rrange(256), 1 + rrange(254))
                               for _ in range(1 + rrange(3))]
                    else:
                        ans = []
                    if ans:
                        answers = ",".join('{"rrname":"%s","rrtype":"%s","ttl":%d,"rdata":"%s"}'
                                           % (name, rrtype, 30 + rrange(3600), a) for a in ans)
                        grouped = ",".join('"%s"' % a for a in ans)
                        dns = ('{"version":2,"type":"answer","id":%d,"flags":"8180","qr":true,"rd":true,"ra":true,'
                               '"opcode":0,"rrname":"%s","rrtype":"%s","rcode":"NOERROR","answers":[%s],'
                               '"grouped":{"%s":[%s]},"tx_id":%d}') % (qid, name, rrtype, answers, rrtype,
                                                                     grouped, tx)
                    else:
                        dns = ('{"version":2,"type":"answer","id":%d,"flags":"8183","qr":true,"rd":true,"ra":true,'
                               '"opcode":0,"rrname":"%s","rrtype":"%s","rcode":"NXDOMAIN","tx_id":%d}'
                               % (qid, name, rrtype, tx))
                line = ('{"timestamp":"%s","flow_id":%d,"in_iface":"%s","event_type":"dns",%s,"pkt_src":"wire/pcap",'
                        '"community_id":"%s","dns":%s,"host":"sensor-01"}\n') % (ts, f.fid, f.iface, tup, f.cid, dns)
            elif et == "http" or et == "fileinfo":
                f = pick(by_kind["http"])
                tx = tx_ids.get(f.fid, 0)
                tx_ids[f.fid] = tx + 1
                depth = 1 + rrange(4)
                ext = EXTS[rrange(len(EXTS))]
                fname = "/" + "/".join(PATH_WORDS[rrange(len(PATH_WORDS))] for _ in range(depth))
                if ext:
                    fname += "-%x%s" % (rbits(24), ext)
                url = fname + ("?id=%d&session=%016x" % (rrange(100000), rbits(64)) if rnd() < 0.3 else "")
                method = METHODS[rrange(len(METHODS))]
                status = STATUSES[rrange(len(STATUSES))]
                length = rrange(200) if status >= 300 else int(1 + rnd() * rnd() * rnd() * 5_000_000)
                ctype = CONTENT_TYPES[rrange(len(CONTENT_TYPES))]
                refer = ',"http_refer":"http://%s/"' % f.host if rnd() < 0.4 else ""
                http = ('{"hostname":"%s","url":"%s","http_user_agent":"%s","http_content_type":"%s"%s,'
                        '"http_method":"%s","protocol":"HTTP/1.1","status":%d,"length":%d}') % (
                    f.host, url, f.ua, ctype, refer, method, status, length)
                tup = f.rev if rnd() < 0.5 else f.fwd
                if et == "http":
                    line = ('{"timestamp":"%s","flow_id":%d,"in_iface":"%s","event_type":"http",%s,'
                            '"pkt_src":"wire/pcap","community_id":"%s","tx_id":%d,"http":%s,"host":"sensor-01"}\n') % (
                        ts, f.fid, f.iface, tup, f.cid, tx, http)
                else:
                    stored = "true" if rnd() < 0.1 else "false"
                    fstate = "CLOSED" if rnd() < 0.9 else "TRUNCATED"
                    line = ('{"timestamp":"%s","flow_id":%d,"in_iface":"%s","event_type":"fileinfo",%s,'
                            '"pkt_src":"wire/pcap","community_id":"%s","http":%s,"app_proto":"http",'
                            '"fileinfo":{"filename":"%s","magic":"%s","gaps":false,"state":"%s",'
                            '"sha256":"%064x","stored":%s,"size":%d,"tx_id":%d},"host":"sensor-01"}\n') % (
                        ts, f.fid, f.iface, tup, f.cid, http, fname, FILE_MAGIC[ext], fstate,
                        rbits(256), stored, length, tx)
            elif et == "tls":
                f = pick(by_kind["tls"])
                tup = f.rev if rnd() < 0.5 else f.fwd
                line = ('{"timestamp":"%s","flow_id":%d,"in_iface":"%s","event_type":"tls",%s,"pkt_src":"wire/pcap",'
                        '"community_id":"%s","tls":%s,"host":"sensor-01"}\n') % (ts, f.fid, f.iface, tup, f.cid, f.tls)
            else:  # alert
                f = pick(flows)
                rev = rnd() < 0.5
                tup = f.rev if rev else f.fwd
                sig = sigs[int(len(sigs) * rnd() * rnd())]
                pts = 1 + rrange(40)
                ptc = rrange(40)
                start = fmt_ts(us - rrange(120_000_000))
                if f.proto == "ICMP":
                    ftup = '"src_ip":"%s","dest_ip":"%s"' % (f.sip, f.dip)
                else:
                    ftup = '"src_ip":"%s","dest_ip":"%s","src_port":%d,"dest_port":%d' % (
                        f.sip, f.dip, f.sport, f.dport)
                app = ',"app_proto":"%s"' % f.app if f.app else ""
                line = ('{"timestamp":"%s","flow_id":%d,"in_iface":"%s","event_type":"alert",%s,"pkt_src":"wire/pcap",'
                        '"community_id":"%s","alert":{"action":"allowed",%s}%s,"direction":"%s",'
                        '"flow":{"pkts_toserver":%d,"pkts_toclient":%d,"bytes_toserver":%d,"bytes_toclient":%d,'
                        '"start":"%s",%s},"host":"sensor-01"}\n') % (
                    ts, f.fid, f.iface, tup, f.cid, sig, app, "to_client" if rev else "to_server",
                    pts, ptc, pts * (60 + rrange(900)), ptc * (60 + rrange(1400)), start, ftup)
            if eph and f.proto != "ICMP" and rnd() < eph:
                # A fresh ephemeral client port: a tuple seen once or twice, as on a real link.
                port = 32768 + rrange(28232)
                line = line.replace('"src_port":%d,' % f.sport, '"src_port":%d,' % port, 1) \
                           .replace('"dest_port":%d,' % f.sport, '"dest_port":%d,' % port, 1)
            buf.append(line)
            total += len(line)
        for et in batch_types:
            counts[et] += 1
        write("".join(buf))
        buf.clear()
        done += n
    return total, counts


REQUIRED = ("timestamp", "flow_id", "in_iface", "event_type", "src_ip", "dest_ip", "proto", "community_id")


def check_lines(lines, state):
    """Parses each line with json and checks the schema basics; returns a list of problems."""
    errs = []
    for line in lines:
        state["n"] += 1
        try:
            ev = json.loads(line)
        except ValueError as e:
            errs.append("line %d: invalid JSON: %s" % (state["n"], e))
            continue
        for k in REQUIRED:
            if k not in ev:
                errs.append("line %d: missing %s" % (state["n"], k))
        et = ev.get("event_type")
        if et not in ev:
            errs.append("line %d: no %r object" % (state["n"], et))
        if ev.get("proto") != "ICMP" and not isinstance(ev.get("src_port"), int):
            errs.append("line %d: no src_port" % state["n"])
        fid = ev.get("flow_id")
        if not isinstance(fid, int) or not 0 < fid <= JS_MAX:
            errs.append("line %d: bad flow_id %r" % (state["n"], fid))
        elif fid > FLOW_ID_MAX:
            state["big_ids"] += 1
        ts = ev.get("timestamp", "")
        if ts <= state["last_ts"]:
            errs.append("line %d: timestamp %s not after %s" % (state["n"], ts, state["last_ts"]))
        state["last_ts"] = ts
        # a flow's tuple: flow events fix the first direction; others must match it or its reverse
        key = (ev.get("src_ip"), ev.get("src_port"), ev.get("dest_ip"), ev.get("dest_port"), ev.get("proto"))
        rkey = (key[2], key[3], key[0], key[1], key[4])
        seen = state["tuples"].get(fid)
        if seen is None:
            state["tuples"][fid] = (key, et == "flow")
        else:
            first, fixed = seen
            if key != first and rkey != first:
                errs.append("line %d: flow_id %d with another tuple" % (state["n"], fid))
            elif et == "flow" and key != first:
                if fixed:
                    errs.append("line %d: flow event in reply direction" % state["n"])
                else:
                    state["tuples"][fid] = (key, True)
            elif et != "flow" and fixed:
                state["nonflow"] += 1
                state["swapped"] += key != first
        if len(errs) > 20:
            break
    return errs


def main():
    ap = argparse.ArgumentParser(description="Deterministic generator of Suricata eve.json lines.")
    ap.add_argument("--events", type=int, default=1_000_000, help="number of lines (default 1000000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--flows", type=int, default=50_000, help="distinct flow tuples, at least 4 (default 50000)")
    ap.add_argument("-o", dest="output", default="-", help="output file (default stdout)")
    ap.add_argument("--ephemeral", type=float, default=0.0,
                    help="share of events (0..1) given a fresh ephemeral client port, so that most "
                         "tuples are seen once or twice (realistic cardinality; default 0)")
    ap.add_argument("--span", type=float, default=None,
                    help="seconds the timestamps cover (default: ~100 us per event)")
    ap.add_argument("--check", action="store_true",
                    help="also parse the lines with json (all up to 200000, then a sample) and check them")
    args = ap.parse_args()
    if args.events < 0 or args.flows < 4:
        ap.error("--events must be >= 0 and --flows >= 4 (one flow of each kind: dns, http, tls, other)")

    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="ascii", buffering=1 << 20)
    state = {"n": 0, "last_ts": "", "big_ids": 0, "tuples": {}, "nonflow": 0, "swapped": 0}
    errs = []
    every = max(1, args.events // 200_000)
    chunk_no = [0]

    def write(s):
        out.write(s)
        if args.check and not errs:
            chunk_no[0] += 1
            if every == 1 or chunk_no[0] % every == 1:  # whole chunks, so the order checks hold
                errs.extend(check_lines(s.splitlines(), state))

    t0 = time.time()
    total, counts = generate(args, write)
    if out is not sys.stdout:
        out.close()
    else:
        out.flush()
    dt = time.time() - t0
    n = max(1, args.events)
    mix = ", ".join("%s %.1f%%" % (k, 100.0 * v / n) for k, v in counts.items())
    print("gen_eve: %d events, %d bytes, average line %.1f bytes, %.1f s; mix: %s"
          % (args.events, total, total / n, dt, mix), file=sys.stderr)
    if args.check:
        if errs:
            for e in errs[:20]:
                print("gen_eve: check: " + e, file=sys.stderr)
            sys.exit(1)
        print("gen_eve: check: %d lines parsed OK, %d flow_ids above 2^51, %.1f%% of checked non-flow "
              "events in reply direction" % (state["n"], state["big_ids"],
                                            100.0 * state["swapped"] / max(1, state["nonflow"])),
              file=sys.stderr)


if __name__ == "__main__":
    main()
