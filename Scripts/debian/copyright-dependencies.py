#!/usr/bin/env python3
"""Prints a debian/copyright paragraph for each Swift package Parley is built with.

Reads `swift package show-dependencies --format json` on standard input. Each paragraph names the
package, its version and repository, its license (only Apache-2.0 is recognised: a dependency under
another license fails here until its license is added) and, verbatim, its NOTICE file, which the
Apache License asks to travel with the binaries. Vendored C code under older licenses (BoringSSL's
parts under the OpenSSL and SSLeay licenses) gets a paragraph of its own with the text found in
its sources. Ends with the Apache-2.0 license paragraph.
"""

import json
import pathlib
import re
import sys


def packages(node, seen):
    for dependency in node.get("dependencies", []):
        if dependency["identity"] not in seen:
            seen[dependency["identity"]] = dependency
            packages(dependency, seen)
    return seen


def field_text(text):
    """Text as the continuation lines of a field: indented, blank lines as ' .'."""
    lines = text.strip("\n").splitlines()
    return "\n".join(" " + line.rstrip() if line.strip() else " ." for line in lines)


EXCEPTION = "## Runtime Library Exception to the Apache 2.0 License: ##"


def copyright_of(checkout, name):
    """The first copyright line of the package's NOTICE file, else its authors by name."""
    notice = checkout / "NOTICE.txt"
    if notice.exists():
        for line in notice.read_text(errors="replace").splitlines():
            if re.match(r"\s*Copyright\b", line):
                return line.strip().removeprefix("Copyright").strip()
    return f"the {name} authors"


def license_of(checkout):
    """The license's short name and, for Swift's Runtime Library Exception, the exception's text."""
    for name in ("LICENSE.txt", "LICENSE", "LICENSE.md"):
        path = checkout / name
        if path.exists():
            text = path.read_text(errors="replace")
            if "Apache License" in text and "Version 2.0" in text:
                if EXCEPTION in text:
                    exception = "\n".join(line.strip() for line in text.split(EXCEPTION, 1)[1].splitlines())
                    return "Apache-2.0 with Swift exception", exception
                return "Apache-2.0", None
    sys.exit(f"copyright: {checkout.name}: no Apache-2.0 LICENSE file; add its license to Scripts/debian/copyright")


# Comment blocks in vendored C sources that carry a license other than Apache-2.0, by the line
# that starts them (BoringSSL keeps these on code that came from SSLeay and early OpenSSL).
OLD_LICENSES = {
    "SSLeay": re.compile(r"Copyright \(C\) 1995-1998 Eric Young"),
    "OpenSSL": re.compile(r"Copyright \(c\) \d{4}(-\d{4})? The OpenSSL Project\.\s+All rights reserved\."),
}


def comment_block(lines, start):
    """The C comment containing line `start`, without its comment markers."""
    first = start
    while first > 0 and "/*" not in lines[first]:
        first -= 1
    last = start
    while last < len(lines) - 1 and "*/" not in lines[last]:
        last += 1
    block = []
    for line in lines[first : last + 1]:
        line = re.sub(r"^\s*(/\*+|\*/|\*)?", "", line).replace("*/", "").rstrip()
        block.append(line[1:] if line.startswith(" ") else line)
    return "\n".join(block).strip("\n")


def old_licenses(checkout):
    found = {}
    for path in sorted((checkout / "Sources").rglob("*")):
        if path.suffix not in (".c", ".cc", ".h") or not path.is_file():
            continue
        lines = path.read_text(errors="replace").splitlines()
        for name, pattern in OLD_LICENSES.items():
            if name in found:
                continue
            for index, line in enumerate(lines[:80]):
                if pattern.search(line):
                    block = comment_block(lines, index)
                    if "Redistribution and use" in block:
                        found[name] = block
                    break
        if len(found) == len(OLD_LICENSES):
            break
    return found


def main():
    tree = json.load(sys.stdin)
    found_old = {}
    used_old_by = {}
    exception = None
    for identity, package in sorted(packages(tree, {}).items()):
        checkout = pathlib.Path(package["path"])
        print()
        print(f"Files: .build/checkouts/{checkout.name}/*")
        license, exception_text = license_of(checkout)
        exception = exception or exception_text
        print(f"Copyright: {copyright_of(checkout, package['name'])}")
        print(f"License: {license}")
        print(f"Comment: {package['name']} {package['version']}, {package['url']}")
        notice = checkout / "NOTICE.txt"
        if notice.exists():
            print(" NOTICE.txt:")
            print(" .")
            print(field_text(notice.read_text(errors="replace")))
        for name, text in old_licenses(checkout).items():
            found_old.setdefault(name, text)
            used_old_by.setdefault(name, []).append(checkout.name)
    for name, text in found_old.items():
        print()
        print(f"Files: {' '.join(f'.build/checkouts/{checkout}/Sources/*' for checkout in used_old_by[name])}")
        holder = next(line for line in text.splitlines() if "Copyright" in line)
        print(f"Copyright: {holder.strip().removeprefix('Copyright').strip()}")
        print(f"Comment: Parts of the vendored BoringSSL carry the {name} license.")
        print(f"License: {name}")
        print(field_text(text))
    print()
    print("License: Apache-2.0")
    print(" On Debian systems the full text of the Apache License, Version 2.0 is in")
    print(" /usr/share/common-licenses/Apache-2.0.")
    if exception:
        print()
        print("License: Apache-2.0 with Swift exception")
        print(" The Apache License, Version 2.0 (on Debian systems in")
        print(" /usr/share/common-licenses/Apache-2.0), with the Runtime Library Exception:")
        print(" .")
        print(field_text(exception))


main()
