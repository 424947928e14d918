#!/usr/bin/python3
"""Reads the host's apt sources (deb822 *.sources and one-line *.list) and prints, for a
Debian bookworm chroot built by scripts/docker-test.sh:

    apt_sources.py mirror    -> the URI that serves `bookworm main` (for debootstrap)
    apt_sources.py list      -> one-line sources.list entries for the host's enabled Debian
                                bookworm suites (bookworm, -updates, -security), main only

Only Debian's own archives are kept (a suite named bookworm*, component main); third-party
repositories of the host are left out. Exit 1 when no bookworm mirror is configured.
"""
import glob
import os
import sys

APT = os.environ.get("APT_ETC", "/etc/apt")


def entries():
    """(uri, suite, components) for every enabled `deb` source of the host."""
    out = []
    files = [os.path.join(APT, "sources.list")] + sorted(glob.glob(os.path.join(APT, "sources.list.d", "*.list")))
    for path in files:
        try:
            lines = open(path, encoding="utf-8").read().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line.startswith("deb "):
                continue
            words = line.split()[1:]
            if words and words[0].startswith("["):  # [arch=... signed-by=...]
                while words and not words[0].endswith("]"):
                    words.pop(0)
                words.pop(0)
            if len(words) >= 3:
                out.append((words[0], words[1], words[2:]))
    for path in sorted(glob.glob(os.path.join(APT, "sources.list.d", "*.sources"))):
        try:
            text = open(path, encoding="utf-8").read()
        except OSError:
            continue
        for stanza in text.split("\n\n"):
            fields = {}
            key = None
            for line in stanza.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0] in " \t" and key:
                    fields[key] += " " + line.strip()
                    continue
                if ":" in line:
                    key, val = line.split(":", 1)
                    key = key.strip().lower()
                    fields[key] = val.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in fields.get("types", "").split():
                continue
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    out.append((uri, suite, fields.get("components", "").split()))
    return out


def debian(ents):
    return [(u.rstrip("/"), s, c) for u, s, c in ents
            if (s == "bookworm" or s.startswith("bookworm-") or s.startswith("bookworm/")) and "main" in c]


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "mirror"
    ents = debian(entries())
    base = [u for u, s, _ in ents if s == "bookworm"]
    if not base:
        print("apt_sources: no 'bookworm main' source in " + APT, file=sys.stderr)
        return 1
    if mode == "mirror":
        print(base[0])
    elif mode == "list":
        seen = set()
        for u, s, _ in ents:
            if (u, s) not in seen:
                seen.add((u, s))
                print(f"deb {u} {s} main")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
