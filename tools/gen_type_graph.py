#!/usr/bin/env python3
"""Generate the merge type graph for Rampart's apiserver::merge module.

Reads the k8s-openapi crate sources (one `.rs` file per OpenAPI definition)
and writes a compact JSON description of every struct: its JSON field names,
the type of each field, and how lists and maps merge.  The information comes
from three places in each generated file:

* the struct definition             -> Rust field names and Rust field types
* `impl DeepMerge`                  -> list::atomic / list::set / list::map(keys)
                                       and map::granular / map::atomic
* `impl Deserialize` (visit_str)    -> the JSON name of each Rust field
* `impl Resource`                   -> the (group, kind) roots

k8s-openapi derives its list-map keys from `x-kubernetes-patch-merge-key`
when a field has one, and from `x-kubernetes-list-map-keys` otherwise, so a
single key is the strategic-merge-patch merge key.  Where upstream's
structured-merge-diff uses more keys (container ports are keyed by
containerPort *and* protocol) or upstream's Go struct tags disagree with that
reading, OVERRIDES below wins; every entry there was checked against the
`patchStrategy` / `patchMergeKey` / `+listMapKey` tags in k8s.io/api.

Usage:
    tools/gen_type_graph.py [K8S_OPENAPI_SRC_VERSION_DIR] [OUTPUT]

Defaults: the k8s-openapi 0.29.0 v1_37 sources in the cargo registry and
src/apiserver/merge/type_graph.json next to this script's crate.

Output format (kept small because it is embedded with include_str!):

    {"types": {"<id>": {"<jsonField>": <type>, ...}, ...},
     "roots": {"<group>/<version>/<Kind>": "<id>", ...}}

    <type> := "s"                      scalar (string, number, bool, quantity,
                                       time, int-or-string; merged atomically)
            | "a"                      arbitrary JSON (atomic, e.g. RawExtension)
            | "<id>"                   a struct
            | {"l": <type>, "k": "atomic"|"set"|[key, ...],
               "smp": "merge"|"replace", "d": {key: default}}   a list
            | {"m": <type>, "atomic": true?}                    a string map

`smp` is the strategic-merge-patch strategy; a list-map's first key is its
SMP merge key.  `d` holds defaults for list-map keys (structured-merge-diff
fills a missing key from the schema default, e.g. protocol=TCP).
"""

import json
import os
import re
import sys

DEFAULT_SRC = os.path.expanduser(
    "~/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/k8s-openapi-0.29.0/src/v1_37"
)
DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "src",
    "apiserver",
    "merge",
    "type_graph.json",
)

# (type id, json field) -> changes to the list description.
# Keys use JSON names.  Verified against k8s.io/api struct tags:
#   Container.Ports        `patchMergeKey:"containerPort" patchStrategy:"merge"`
#                          +listType=map +listMapKey=containerPort +listMapKey=protocol
#   ServiceSpec.Ports      `patchMergeKey:"port" patchStrategy:"merge"`
#                          +listType=map +listMapKey=port +listMapKey=protocol
#   PodSpec.TopologySpreadConstraints `patchMergeKey:"topologyKey" patchStrategy:"merge"`
#                          +listMapKey=topologyKey +listMapKey=whenUnsatisfiable
OVERRIDES = {
    ("api.core.v1.Container", "ports"): {
        "k": ["containerPort", "protocol"],
        "d": {"protocol": "TCP"},
    },
    ("api.core.v1.EphemeralContainer", "ports"): {
        "k": ["containerPort", "protocol"],
        "d": {"protocol": "TCP"},
    },
    ("api.core.v1.ServiceSpec", "ports"): {
        "k": ["port", "protocol"],
        "d": {"protocol": "TCP"},
    },
    ("api.core.v1.PodSpec", "topologySpreadConstraints"): {
        "k": ["topologyKey", "whenUnsatisfiable"],
    },
    # `patchStrategy:"merge"` on a set of strings: SMP merges these primitive
    # lists instead of replacing them.
    ("apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers"): {"smp": "merge"},
    # NodeSpec.PodCIDRs: `patchStrategy:"merge"` +listType=set
    ("api.core.v1.NodeSpec", "podCIDRs"): {"smp": "merge"},
    # Upstream has no patchStrategy on these list-maps (listType=map only),
    # so a strategic merge patch replaces them wholesale.
    #   ResourceRequirements.Claims: +listType=map +listMapKey=name, no tags
    ("api.core.v1.ResourceRequirements", "claims"): {"smp": "replace"},
    # StatefulSetSpec.VolumeClaimTemplates: +listType=atomic upstream;
    # k8s-openapi keys it on metadata.name, which SSA cannot express.
    ("api.apps.v1.StatefulSetSpec", "volumeClaimTemplates"): {"k": "atomic", "smp": "replace"},
}

# Structs tagged `+structType=atomic` upstream: replaced and owned as one
# field by server-side apply.  k8s-openapi does not carry this marker.  They
# are emitted as "a" (atomic JSON); strategic merge patch is unaffected
# because every list inside them is atomic anyway.
ATOMIC_STRUCTS = {
    "apimachinery.pkg.apis.meta.v1.LabelSelector",
    "api.core.v1.ObjectReference",
    "api.core.v1.LocalObjectReference",
    "api.core.v1.TypedLocalObjectReference",
    "api.core.v1.SecretReference",
    "api.core.v1.ObjectFieldSelector",
    "api.core.v1.ResourceFieldSelector",
    "api.core.v1.ConfigMapKeySelector",
    "api.core.v1.SecretKeySelector",
    "api.core.v1.NodeSelector",
    "api.core.v1.NodeSelectorTerm",
    "api.core.v1.TopologySelectorTerm",
}

# Sets of primitives merge under SMP only when upstream tags them
# patchStrategy:"merge"; everything not listed in OVERRIDES replaces.

FIELD_RE = re.compile(r"^\s*pub\s+(r#)?([a-z_0-9]+)\s*:\s*(.+?),\s*$")
STRUCT_RE = re.compile(r"^pub struct (\w+)(<[^>]*>)?\s*\{\s*$", re.M)
TUPLE_RE = re.compile(r"^pub struct (\w+)\(", re.M)
ENUM_RE = re.compile(r"^pub enum (\w+)", re.M)
RENAME_RE = re.compile(r'"([A-Za-z0-9_$\-.]+)"\s*=>\s*Field::Key_(\w+)')
STRAT_RE = re.compile(
    r"merge_strategies::(list|map)::(atomic|set|map|granular)\(\s*&mut self\.(r#)?(\w+)"
)
KEY_RE = re.compile(r"lhs\.(r#)?(\w+)\s*==")


def type_id(rust_path):
    """crate::api::core::v1::Container -> api.core.v1.Container"""
    p = rust_path
    if p.startswith("crate::"):
        p = p[len("crate::"):]
    return p.replace("::", ".")


SCALARS = {
    "std::string::String",
    "i32",
    "i64",
    "f64",
    "bool",
    "crate::ByteString",
}


def split_generic(s, prefix):
    assert s.startswith(prefix + "<") and s.endswith(">"), s
    return s[len(prefix) + 1:-1].strip()


def parse_type(t):
    """Parse a Rust field type into (kind, detail)."""
    t = t.strip()
    if t.startswith("Option<"):
        return parse_type(split_generic(t, "Option"))
    if t.startswith("std::boxed::Box<"):
        return parse_type(split_generic(t, "std::boxed::Box"))
    if t.startswith("std::vec::Vec<"):
        return ("list", parse_type(split_generic(t, "std::vec::Vec")))
    if t.startswith("std::collections::BTreeMap<"):
        inner = split_generic(t, "std::collections::BTreeMap")
        key, _, val = inner.partition(",")
        assert key.strip() == "std::string::String", t
        return ("map", parse_type(val))
    if t in SCALARS:
        return ("scalar", None)
    if t == "crate::serde_json::Value":
        return ("any", None)
    if t.startswith("crate::"):
        return ("ref", type_id(t))
    raise ValueError("unknown type " + t)


def module_of(path, src):
    rel = os.path.relpath(os.path.dirname(path), src)
    return rel.replace(os.sep, ".")


def parse_file(path, src):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = {"structs": {}, "scalars": set(), "anys": set(), "roots": {}}
    mod = module_of(path, src)
    for m in TUPLE_RE.finditer(text):
        # Newtypes (Quantity, Time, ...) serialize as a scalar; those wrapping
        # serde_json::Value are arbitrary JSON.
        line = text[m.start():text.index("\n", m.start())]
        name = mod + "." + m.group(1)
        if "serde_json::Value" in line:
            out["anys"].add(name)
        else:
            out["scalars"].add(name)
    for m in ENUM_RE.finditer(text):
        out["scalars"].add(mod + "." + m.group(1))
    for m in STRUCT_RE.finditer(text):
        if m.group(2):  # generic wrappers (List<T>, WatchEvent<T>) are not objects we merge
            continue
        name = mod + "." + m.group(1)
        body = text[m.end():text.index("\n}", m.end())]
        fields = {}
        for line in body.splitlines():
            fm = FIELD_RE.match(line)
            if fm:
                fields[fm.group(2)] = parse_type(fm.group(3))
        renames = {}
        for rm in RENAME_RE.finditer(text):
            renames[rm.group(2)] = rm.group(1)
        strategies = {}
        dm = re.search(r"impl crate::DeepMerge for " + re.escape(m.group(1)) + r"\b.*?\n}\n", text, re.S)
        if dm:
            dtext = dm.group(0)
            for sm in STRAT_RE.finditer(dtext):
                kind, strat, field = sm.group(1), sm.group(2), sm.group(4)
                if kind == "list" and strat == "map":
                    # the key closures follow up to the matching `]`
                    rest = dtext[sm.end():]
                    keys_src = rest[rest.index("&[") : rest.index("]")]
                    keys = [k.group(2) for k in KEY_RE.finditer(keys_src)]
                    strategies[field] = ("list", keys)
                else:
                    strategies[field] = (kind, strat)
        out["structs"][name] = {"fields": fields, "renames": renames, "strategies": strategies}
    rm = re.search(
        r'impl crate::Resource for (\w+) \{.*?const GROUP: &\'static str = "([^"]*)";.*?const KIND: &\'static str = "([^"]*)";.*?const VERSION: &\'static str = "([^"]*)";',
        text,
        re.S,
    )
    if rm:
        out["roots"]["%s/%s/%s" % (rm.group(2), rm.group(4), rm.group(3))] = mod + "." + rm.group(1)
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SRC
    out_path = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUT
    structs, scalars, anys, roots = {}, set(), set(), {}
    for dirpath, _, files in os.walk(src):
        for fn in sorted(files):
            if not fn.endswith(".rs") or fn == "mod.rs":
                continue
            parsed = parse_file(os.path.join(dirpath, fn), src)
            structs.update(parsed["structs"])
            scalars |= parsed["scalars"]
            anys |= parsed["anys"]
            roots.update(parsed["roots"])

    def json_name(struct, rust_field):
        return structs[struct]["renames"].get(rust_field, rust_field)

    def encode(t, owner, field, top=True):
        kind, detail = t
        if kind == "scalar":
            return "s"
        if kind == "any":
            return "a"
        if kind == "ref":
            if detail in scalars:
                return "s"
            if detail in anys or detail in ATOMIC_STRUCTS:
                return "a"
            if detail not in structs:
                raise ValueError("unknown ref %s in %s.%s" % (detail, owner, field))
            return detail
        # the DeepMerge strategy names the field itself; lists nested inside
        # a map value (UserInfo.extra) have no strategy and are atomic
        strat = structs[owner]["strategies"].get(field) if top else None
        if kind == "list":
            elem = encode(detail, owner, field, False)
            if strat is None or strat == ("list", "atomic"):
                desc = {"l": elem, "k": "atomic", "smp": "replace"}
            elif strat == ("list", "set"):
                desc = {"l": elem, "k": "set", "smp": "replace"}
            else:
                keys = strat[1]
                elem_id = detail[1]
                jkeys = [json_name(elem_id, k) for k in keys]
                # one key == x-kubernetes-patch-merge-key (see module doc)
                desc = {"l": elem, "k": jkeys, "smp": "merge" if len(jkeys) == 1 else "replace"}
            return desc
        if kind == "map":
            desc = {"m": encode(detail, owner, field, False)}
            if strat == ("map", "atomic"):
                desc["atomic"] = True
            return desc
        raise ValueError(kind)

    types = {}
    for name in sorted(structs):
        s = structs[name]
        enc = {}
        for rust_field, t in sorted(s["fields"].items()):
            jf = json_name(name, rust_field)
            enc[jf] = encode(t, name, rust_field)
        types[name] = enc

    for tid in ATOMIC_STRUCTS:
        assert tid in structs, tid
    for (tid, field), change in OVERRIDES.items():
        desc = types[tid][field]
        assert isinstance(desc, dict) and "l" in desc, (tid, field)
        desc.update(change)

    doc = {"types": types, "roots": dict(sorted(roots.items()))}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print("wrote %s: %d types, %d roots" % (out_path, len(types), len(roots)))


if __name__ == "__main__":
    main()
