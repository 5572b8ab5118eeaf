#!/usr/bin/env python3
# Trains the DGA (domain generation algorithm) random forest used by analyzer/dga-score.lua.
#
# All training data is synthetic, made here by the generators below (no third-party domain
# lists, so no licence question). Written against scikit-learn 1.9.1 / numpy 2.4.6 / Python 3.11;
# deterministic (fixed seeds, one thread). Run from the repository root:
#
#   python3 -m venv /tmp/dfm-venv && /tmp/dfm-venv/bin/pip install scikit-learn
#   /tmp/dfm-venv/bin/python scripts/ml/train_dga.py
#
# Writes scripts/analyzer/dga/dga-rf.model (one tree per line, the arguments of ML.FOREST.ADD,
# key `dga:tree`, features named) and scripts/analyzer/dga/features.tsv (cross-check fixture).
# See README.md beside this file for the generators and the exact feature definitions.

import hashlib
import math
import os
import random
import sys

import numpy as np
from sklearn.ensemble import RandomForestRegressor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # scripts/
OUT = os.path.join(ROOT, "analyzer", "dga")
KEY = "dga:tree"

# ------------------------------------------------------------------ features

NAMES = [
    "num_parts", "len_tld", "len_2ld", "len_3ld", "has_3ld", "more_than_3ld", "two_letter_tld",
    "is_edu", "is_gov", "is_com", "is_net", "is_org", "is_info", "is_biz", "distinct_char",
    "digit_count", "has_digit", "num_dashes", "has_dash", "length_extra", "percent_distinct",
    "percent_digits", "entropy",
]
LN2 = math.log(2)


def extract(domain):
    """The 23 features of a domain name, {name: number}; None for an empty name.

    Must stay bit-identical to analyzer/dga/features.lua: the name is handled as bytes, only
    ASCII letters are lowercased, one trailing dot is removed, labels are split on every '.'
    (empty labels count). tld/2ld/3ld are the last, second-to-last and third-to-last labels
    (length 0 when absent). The character features look at the 2ld only. Entropy is the
    Shannon entropy in bits of the 2ld's bytes, summed in ascending byte order as
    h = h - p * (log(p) / log(2)).
    """
    d = domain.encode("utf-8") if isinstance(domain, str) else bytes(domain)
    d = d.lower()  # bytes.lower() touches A-Z only, like Lua's string.lower in the C locale
    if d.endswith(b"."):
        d = d[:-1]
    if not d:
        return None
    labels = d.split(b".")
    n = len(labels)
    tld = labels[-1]
    sld = labels[-2] if n >= 2 else b""
    third = labels[-3] if n >= 3 else b""
    extra = 0
    for label in labels[:-3]:
        extra += len(label)

    counts = {}
    digits = dashes = 0
    for b in sld:
        counts[b] = counts.get(b, 0) + 1
        if 48 <= b <= 57:
            digits += 1
        elif b == 45:
            dashes += 1
    size = len(sld)
    entropy = 0.0
    for b in sorted(counts):
        p = counts[b] / size
        entropy = entropy - p * (math.log(p) / LN2)

    return {
        "num_parts": n,
        "len_tld": len(tld),
        "len_2ld": size,
        "len_3ld": len(third),
        "has_3ld": int(n >= 3),
        "more_than_3ld": int(n > 3),
        "two_letter_tld": int(len(tld) == 2),
        "is_edu": int(tld == b"edu"),
        "is_gov": int(tld == b"gov"),
        "is_com": int(tld == b"com"),
        "is_net": int(tld == b"net"),
        "is_org": int(tld == b"org"),
        "is_info": int(tld == b"info"),
        "is_biz": int(tld == b"biz"),
        "distinct_char": len(counts),
        "digit_count": digits,
        "has_digit": int(digits > 0),
        "num_dashes": dashes,
        "has_dash": int(dashes > 0),
        "length_extra": extra,
        "percent_distinct": len(counts) / size if size else 0.0,
        "percent_digits": digits / size if size else 0.0,
        "entropy": entropy,
    }


# ------------------------------------------------------------------ benign names

WORDS = """
about account action active address advance agent air alpha amazing american angel animal
answer apple art asset audio auto baby bank base bay beach bear beauty best big bike bird
black blog blue board boat body book box brain bread bridge bright brother brown budget
build business buy cable cake call camera camp capital car card care cash castle cat cell
center change chat cheap check chef child city class clean clear click clinic cloud club
coast code coffee color comfort common community company computer control cook cool copy
corner country craft create credit cross crown cup daily data date deal design desk digital
direct doctor dog dollar door dream drive earth east easy eat eco edge energy engine event
express eye face fair family farm fashion fast field file film finance fire first fish fit
flash flight floor flower fly food force forest free fresh friend fun future game garden
gear gift global gold good green group guide hair hand happy health heart help hero high
hill home hope horse hospital host hot hotel house idea image info insight island jet job
journal joy just key kid king kitchen lab lake land language law lead learn legal life
light line link lion list live local logic love lucky mail main maker map market master
media medical meet metro mind mobile money moon motor mountain movie music nation nature
net network new news next night north note ocean office one online open orange paper park
partner party pay peak people pet phone photo pilot pixel place plan planet play plus
point police pop post power press prime print pro project pure quest quick radio rain
range real red rent report research rest review rich ride right river road rock room
root royal run safe sale school science sea search secure select sense service shop show
side sign silver simple site sky smart snow social soft solar solid sound south space
speed sport spring square star start state station step stock stone store story street
studio style summer sun super support sure swift system table talent task team tech test
thing think time today tool top tour town track trade train travel tree trend trip true
trust truth union unit up urban valley value vision voice wave way web west white wild
win wind wine wise wolf wood word work world write yard year yellow young zone
""".split()

SYLLABLES = """
ab ac ad al am an ar as at ba be bi bo bu ca ce ci co cu da de di do du el em en er es ex
fa fe fi fo ga ge go gu ha he hi ho hu in ka ke ki ko la le li lo lu ma me mi mo mu na ne
ni no nu or pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo za zo
""".split()
BRAND_SUFFIXES = ["ify", "ly", "io", "hub", "lab", "labs", "soft", "tech", "net", "box", "go",
                  "x", "ster", "ia", "able", "sys", "ware", "zon", "base", "kit"]
SUBDOMAINS = ["mail", "api", "cdn", "login", "static", "img", "m", "blog", "shop", "news",
              "dev", "app", "auth", "docs", "support", "smtp", "ns1", "ns2", "edge", "assets",
              "video", "cloud", "portal", "vpn", "secure", "my", "en", "de", "files", "update"]
# (tld, weight); a tuple tld is a registry suffix such as co.uk.
BENIGN_TLDS = [
    ("com", 45), ("net", 8), ("org", 7), ("de", 5), ("co.uk", 3), ("ac.uk", 1), ("org.uk", 1),
    ("io", 3), ("edu", 3), ("gov", 2), ("info", 2), ("biz", 1), ("fr", 2), ("nl", 2),
    ("ru", 2), ("jp", 1), ("co.jp", 1), ("com.au", 1), ("com.br", 1), ("it", 1), ("ca", 1),
    ("us", 1), ("co", 1), ("me", 1), ("tv", 1), ("es", 1), ("ch", 1), ("se", 1), ("pl", 1),
    ("app", 1), ("dev", 1), ("ai", 1),
]


def weighted(rng, pairs):
    total = sum(w for _, w in pairs)
    r = rng.uniform(0, total)
    for v, w in pairs:
        r -= w
        if r <= 0:
            return v
    return pairs[-1][0]


def benign_core(rng):
    style = rng.random()
    w = lambda: rng.choice(WORDS)
    if style < 0.28:
        return w()
    if style < 0.52:
        return w() + w()
    if style < 0.60:
        return w() + "-" + w()
    if style < 0.72:  # brand-like: 2-3 syllables, maybe a suffix (spotify, lenovo, zalando)
        s = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
        return s + rng.choice(BRAND_SUFFIXES) if rng.random() < 0.5 else s
    if style < 0.80:  # word with a number (web2, office365, 24news)
        num = str(rng.choice([1, 2, 3, 4, 7, 9, 24, 360, 365, 99, 123, 2000, 2024]))
        return w() + num if rng.random() < 0.7 else num + w()
    if style < 0.87:  # acronyms (bbc, cnn, ieee)
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 4)))
    if style < 0.93:
        return w() + w() + w()
    return w() + "".join(rng.choice(SYLLABLES) for _ in range(2)) + rng.choice(BRAND_SUFFIXES)


def benign_name(rng):
    name = benign_core(rng) + "." + weighted(rng, BENIGN_TLDS)
    r = rng.random()
    if r < 0.25:
        name = "www." + name
    elif r < 0.50:
        name = rng.choice(SUBDOMAINS) + "." + name
    elif r < 0.56:  # deeper names: static.cdn.x.com, eu-west-1.s3.x.com
        name = rng.choice(SUBDOMAINS) + "." + rng.choice(SUBDOMAINS + ["eu-west-1", "us-east-2"]) + "." + name
    elif r < 0.62:  # CDN-style random host label under a normal registered name
        host = "%08x" % rng.getrandbits(32) if rng.random() < 0.5 else "a%d" % rng.randint(1, 999)
        name = host + "." + rng.choice(["edge", "cdn", "static", "img"]) + "." + name
    return name


# ------------------------------------------------------------------ DGA families

LETTERS = "abcdefghijklmnopqrstuvwxyz"
CONSONANTS = "bcdfghjklmnprstvwxz"
VOWELS = "aeiou"
DGA_TLDS = ["com", "net", "org", "info", "biz", "ru", "cn", "in", "top", "xyz", "cc", "ws",
            "su", "pw", "tk", "de", "co.uk", "eu", "me", "io"]


def dga_random_letters(rng, i):
    """Uniform random letters, length 8-20 (Conficker, Ramnit, CryptoLocker style)."""
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(8, 20)))


def dga_hash_hex(rng, i):
    """Hex digest of a hash of a date seed, cut to 12-32 chars (Bamital, Gameover Zeus style)."""
    day = 1 + i % 365
    seed = "family%d-2024-%03d-%d" % (rng.randint(1, 9), day, i)
    return hashlib.md5(seed.encode()).hexdigest()[: rng.randint(12, 32)]


def dga_pronounceable(rng, i):
    """Consonant-vowel pairs, 8-16 letters, sometimes a closing consonant (Pykspa, Simda style)."""
    out = []
    for _ in range(rng.randint(4, 8)):
        out.append(rng.choice(CONSONANTS) + rng.choice(VOWELS))
    if rng.random() < 0.4:
        out.append(rng.choice(CONSONANTS))
    return "".join(out)


def dga_digit_heavy(rng, i):
    """Letters and digits, length 8-18, 40-80 % digits (numeric-seeded families)."""
    n = rng.randint(8, 18)
    k = int(n * rng.uniform(0.4, 0.8))
    chars = [rng.choice("0123456789") for _ in range(k)] + [rng.choice(LETTERS) for _ in range(n - k)]
    rng.shuffle(chars)
    if chars[0].isdigit() and rng.random() < 0.5:
        chars[0] = rng.choice(LETTERS)
    return "".join(chars)


def dga_wordlist(rng, i):
    """2-4 dictionary words, at least 12 letters, 1 in 4 joined by dashes (Suppobox, Matsnu)."""
    while True:
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 4))]
        name = ("-" if rng.random() < 0.25 else "").join(words)
        if 12 <= len(name) <= 28:
            return name


FAMILIES = [dga_random_letters, dga_hash_hex, dga_pronounceable, dga_digit_heavy, dga_wordlist]


def dga_name(rng, family, i):
    name = family(rng, i) + "." + rng.choice(DGA_TLDS)
    if rng.random() < 0.05:
        name = "www." + name
    return name


# ------------------------------------------------------------------ data set

def dataset(n_benign, n_per_family, seed):
    rng = random.Random(seed)
    seen, rows = set(), []

    def add(name, label, family):
        if name not in seen:
            seen.add(name)
            rows.append((name, label, family))

    while len(rows) < n_benign:
        add(benign_name(rng), 0, "benign")
    for fam in FAMILIES:
        i, count = 0, 0
        while count < n_per_family:
            before = len(rows)
            add(dga_name(rng, fam, i), 1, fam.__name__)
            count += len(rows) - before
            i += 1
    rng.shuffle(rows)
    return rows


def matrix(names):
    return np.array([[extract(n)[k] for k in NAMES] for n in names], dtype=np.float64)


# ------------------------------------------------------------------ export and evaluation

def export(forest):
    """One line per tree: ML.FOREST.ADD arguments, pre-order, features by name."""
    lines = []
    for i, est in enumerate(forest.estimators_):
        t = est.tree_
        parts = [KEY, str(i)]

        def visit(node, path):
            if t.children_left[node] == -1:
                parts.extend([path, "LEAF", repr(float(t.value[node][0][0]))])
                return
            parts.extend([path, "NUMERIC", NAMES[t.feature[node]], repr(float(t.threshold[node]))])
            visit(t.children_left[node], path + "l")
            visit(t.children_right[node], path + "r")

        visit(0, ".")
        lines.append(" ".join(parts))
    return lines


def parse_model(lines):
    """[{path: (name, thr) | value}] from the exported lines (the engine's view of the file)."""
    trees = []
    for line in lines:
        tok = line.split()
        tree, i = {}, 2
        while i < len(tok):
            if tok[i + 1] == "LEAF":
                tree[tok[i]] = float(tok[i + 2])
                i += 3
            else:
                tree[tok[i]] = (tok[i + 2], float(tok[i + 3]))
                i += 4
        trees.append(tree)
    return trees


def score(trees, f):
    """Mean leaf value over the trees, float64 features, left iff x <= thr."""
    s = 0.0
    for t in trees:
        p = "."
        while isinstance(t[p], tuple):
            p += "l" if f[t[p][0]] <= t[p][1] else "r"
        s += t[p]
    return s / len(trees)


EDGE_CASES = [
    "localhost", "com", "COM.", "Example.COM", "www.Example.com.", "example.com.", "a.b",
    "x.y.z", "a..com", "..", "-", "1.2.3.4", "192-168-0-1.ip.example.net", "123456.com",
    "0x7f.info", "my-very-long-hyphenated-domain-name.biz", "xn--bcher-kva.de",
    "xn--80ak6aa92e.com", "xn--fiqs8s.xn--fiqz9s", "b\u00fccher.de",
    "a.b.c.d.e.f.example.org", "one.two.three.four.five.gov", "mail.google.com",
    "ns1.dns.cs.stanford.edu", "login.microsoftonline.com", "www.bbc.co.uk", "t.co",
    "aaaaaaaaaaaaaaaa.net", "abcdefghijklmnopqrstuvwxyz.ru", "qwxzkjhgfdsplmnb.info",
    "e4d909c290d0fb1ca068ffaddf22cbd0.com", "x1y2z3w4v5u6.cn", "UPPER-CASE-DGA-QXZVBK.BIZ",
    "sub.domain.with.many.labels.and.more.example.co.jp", "11df12d7.edge.googleapis.cloud",
    "_dmarc.example.com", "wpad", "a", "A.", "trailing.dot.net.",
]


def main():
    rows = dataset(n_benign=10000, n_per_family=2000, seed=20240601)
    split = int(len(rows) * 0.8)
    train, test = rows[:split], rows[split:]
    Xtr, ytr = matrix([r[0] for r in train]), np.array([r[1] for r in train], dtype=np.float64)
    Xte, yte = matrix([r[0] for r in test]), np.array([r[1] for r in test])

    rf = RandomForestRegressor(n_estimators=5, max_depth=15, random_state=42, n_jobs=1)
    rf.fit(Xtr, ytr)
    pred = rf.predict(Xte)
    acc = float(np.mean((pred >= 0.5) == (yte == 1)))
    print("train %d, held-out %d: accuracy %.4f" % (len(train), len(test), acc))
    for fam in ["benign"] + [f.__name__ for f in FAMILIES]:
        mask = np.array([r[2] == fam for r in test])
        print("  %-20s n=%5d  correct %.4f" % (fam, mask.sum(), np.mean((pred[mask] >= 0.5) == (yte[mask] == 1))))

    lines = export(rf)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "dga-rf.model"), "w") as f:
        f.write("\n".join(lines) + "\n")
    for i, est in enumerate(rf.estimators_):
        print("  tree %d: %d nodes, depth %d" % (i, est.tree_.node_count, est.tree_.max_depth))
    print("  dga-rf.model: %d bytes" % os.path.getsize(os.path.join(OUT, "dga-rf.model")))

    # The exported text, evaluated on float64 features as the engine does, must agree with
    # sklearn (which compares float32 copies; they can differ only on exact threshold ties).
    trees = parse_model(lines)
    ours = np.array([score(trees, extract(r[0])) for r in test])
    agree = int(np.sum(np.abs(ours - pred) < 1e-12))
    print("exported model vs sklearn on held-out: %d/%d agree" % (agree, len(test)))
    assert agree >= len(test) - 5

    # features.tsv: edge cases, then a deterministic mix of held-out names.
    rng = random.Random(7)
    picked = rng.sample([r[0] for r in test if r[1] == 0], 80) + rng.sample([r[0] for r in test if r[1] == 1], 80)
    with open(os.path.join(OUT, "features.tsv"), "w", encoding="utf-8") as f:
        f.write("domain\t" + "\t".join(NAMES) + "\tscore\n")
        for name in EDGE_CASES + picked:
            feats = extract(name)
            if feats is None:
                continue
            f.write(name + "\t" + "\t".join(repr(feats[k]) for k in NAMES) + "\t%r\n" % score(trees, feats))
    print("features.tsv: %d domains" % (len(EDGE_CASES) + len(picked)))


if __name__ == "__main__":
    sys.exit(main())
