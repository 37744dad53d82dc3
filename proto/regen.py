#!/usr/bin/env python3
"""Regenerate proto/k8s.desc and proto/gosemantics.txt from upstream Kubernetes sources.

Input: a Go source tree holding k8s.io/api, k8s.io/apimachinery and
k8s.io/apiextensions-apiserver, as shipped by Debian's golang-k8s-api-dev,
golang-k8s-apimachinery-dev and golang-k8s-apiextensions-apiserver-dev
(/usr/share/gocode/src). proto/regen.sh fetches and unpacks those packages.

Outputs:
  k8s.desc          FileDescriptorSet of every upstream generated.proto
                    (protoc --include_imports, no source info).
  gosemantics.txt   What the .proto files cannot say but upstream's JSON
                    encoding depends on, read from the Go struct tags:
                    pointer-ness, omitempty/omitzero, `json:",inline"`
                    embedding, JSON names that differ from proto names, and
                    Go list types (`type Verbs []string`) that protobuf wraps
                    in a message with one repeated `items` field.

                    It also lists the kinds upstream registers, read off the
                    names of upstream's round-trip fixtures (testdata/HEAD),
                    which cover every kind of every built-in group version.

Line format (one message per line, fields in any order):
  <proto.full.Name> <number>:<flags>[=<jsonName>] ...
  <proto.full.Name> list
  kind <apiVersion> <Kind>
flags: p pointer, e omitempty, z omitzero, i inline, s slice/map, - none.
"""

import os
import re
import subprocess
import sys

TESTDATA = ("k8s.io/api/testdata/HEAD", "k8s.io/apiextensions-apiserver/pkg/apis/testdata/HEAD")
# WatchEvent frames a watch stream (its JSON has no TypeMeta); never a request body.
NOT_KINDS = ("WatchEvent",)
ROOTS = ("k8s.io/api", "k8s.io/apimachinery", "k8s.io/apiextensions-apiserver")

STRUCT_RE = re.compile(r"^type (\w+) struct \{\s*$")
LIST_RE = re.compile(r"^type (\w+) \[\](\w+)\s*$")
# `type MatchCondition v1.MatchCondition`: same fields as another package's struct.
DEFINED_RE = re.compile(r"^type (\w+) (\w+)\.(\w+)\s*$")
IMPORT_RE = re.compile(r'^\s*(\w+)?\s*"(k8s\.io/[^"]+)"\s*$')
FIELD_RE = re.compile(r"^\s*(?:(\w+)\s+)?(\S+)\s+`([^`]*)`")
TAG_RE = re.compile(r'(\w+):"([^"]*)"')


def proto_files(src):
    out = []
    for root in ROOTS:
        for d, _, files in os.walk(os.path.join(src, root)):
            if "generated.proto" in files and "testapigroup" not in d:
                out.append(os.path.relpath(os.path.join(d, "generated.proto"), src))
    return sorted(out)


def registered_kinds(src):
    """`apps.v1.Deployment.pb` -> `apps/v1 Deployment`; `core` is the legacy group."""
    out = []
    for d in TESTDATA:
        for fn in sorted(os.listdir(os.path.join(src, d))):
            if not fn.endswith(".pb"):
                continue
            parts = fn[:-3].split(".")
            group, version, kind = ".".join(parts[:-2]), parts[-2], parts[-1]
            if kind in NOT_KINDS:
                continue
            out.append("kind %s %s" % (version if group == "core" else group + "/" + version, kind))
    return out


def proto_package(path):
    with open(path) as f:
        for line in f:
            m = re.match(r"^package ([\w.]+);", line)
            if m:
                return m.group(1)
    raise SystemExit("no package line in " + path)


def go_structs(pkg_dir):
    """Yield (name, fields) for Go structs, (name, "list") for slice types and
    (name, ("same", proto.full.Name)) for types defined as another package's struct."""
    for fn in sorted(os.listdir(pkg_dir)):
        if not fn.endswith(".go") or fn.endswith("_test.go") or fn.startswith("zz_generated"):
            continue
        with open(os.path.join(pkg_dir, fn)) as f:
            lines = f.read().split("\n")
        imports = {}
        for line in lines:
            im = IMPORT_RE.match(line)
            if im:
                path = im.group(2)
                imports[im.group(1) or path.rsplit("/", 1)[-1]] = path.replace("/", ".").replace("-", "_")
        i = 0
        while i < len(lines):
            dm = DEFINED_RE.match(lines[i])
            if dm and dm.group(2) in imports:
                yield dm.group(1), ("same", imports[dm.group(2)] + "." + dm.group(3))
            if re.match(r"^type (\w+) struct ?\{\}\s*$", lines[i]):
                yield lines[i].split()[1], []
            lm = LIST_RE.match(lines[i])
            if lm:
                yield lm.group(1), "list"
            m = STRUCT_RE.match(lines[i])
            i += 1
            if not m:
                continue
            fields = []
            while i < len(lines) and lines[i] != "}":
                fm = FIELD_RE.match(lines[i])
                if fm and not lines[i].lstrip().startswith("//"):
                    tags = dict(TAG_RE.findall(fm.group(3)))
                    fields.append((fm.group(1), fm.group(2), tags))
                i += 1
            yield m.group(1), fields


def field_entry(gotype, tags):
    proto = tags["protobuf"].split(",")
    number = proto[1]
    pname = next((p[5:] for p in proto if p.startswith("name=")), "")
    jparts = tags.get("json", "").split(",")
    jname = jparts[0]
    flags = ""
    if gotype.startswith("*"):
        flags += "p"
    if "omitempty" in jparts[1:]:
        flags += "e"
    if "omitzero" in jparts[1:]:
        flags += "z"
    if jname == "" and "inline" in jparts[1:]:
        flags += "i"
    if gotype.startswith("[]") or gotype.startswith("map["):
        flags += "s"
    entry = "%s:%s" % (number, flags or "-")
    # json:"-" types (RawExtension, FieldsV1) have custom marshalers; keep proto name.
    if jname not in ("", "-") and jname != pname:
        entry += "=" + jname
    return entry


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/gocode/src"
    here = os.path.dirname(os.path.abspath(__file__))
    files = proto_files(src)
    # protoc warns about every unused import upstream leaves in; show output only on failure.
    res = subprocess.run(
        ["protoc", "-I", src, "--include_imports",
         "--descriptor_set_out=" + os.path.join(here, "k8s.desc")] + files,
        capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    out = ["# Generated by proto/regen.py from upstream Go struct tags; do not edit."]
    structs, same = {}, {}
    for pf in files:
        pkg = proto_package(os.path.join(src, pf))
        with open(os.path.join(src, pf)) as f:
            messages = set(re.findall(r"^message (\w+) \{", f.read(), re.M))
        for name, fields in go_structs(os.path.join(src, os.path.dirname(pf))):
            if name not in messages:
                continue
            full = "%s.%s" % (pkg, name)
            if fields == "list":
                out.append("%s list" % full)
            elif isinstance(fields, tuple):
                same[full] = fields[1]
            else:
                structs[full] = [field_entry(t, tags) for _, t, tags in fields
                                 if tags.get("protobuf", "-") != "-"]
    for full, target in same.items():
        structs[full] = structs[target]
    for full in sorted(structs):
        out.append(" ".join([full] + structs[full]))
    out += registered_kinds(src)
    with open(os.path.join(here, "gosemantics.txt"), "w") as f:
        f.write("\n".join(out) + "\n")
    print("%d proto files, %d semantic lines" % (len(files), len(out) - 1))


if __name__ == "__main__":
    main()
