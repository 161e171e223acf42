#!/usr/bin/env python3
"""Tests MAOS's Argo CD health checks and resource actions (argocd/resource_customizations/).

Every health_test.yaml and action_test.yaml there (Argo CD's own test format) is run with Lua 5.1
from lupa, in a sandbox like the one Argo CD runs custom Lua in (gopher-lua, util/lua/lua.go):
only the base and table libraries (string and math too for a kind whose config sets
useOpenLibs), no io, os, debug, require, dofile, loadfile, load or loadstring, and no getfenv or
setfenv (they reach the unsandboxed globals); the object is the global `obj`, and what a script
returns goes through JSON as gopher-json encodes it (an empty table is `[]`, a table seen twice
is an error). A Lua error, a health status Argo CD does not know, or output that Argo CD could
not decode is a failure.

Beyond the cases themselves it checks what keeps the checks honest:
  - every fixture (inputs and expected outputs) satisfies its kind's CRD schema in crds/, so a
    misspelt field or a phase that does not exist cannot make a test pass (one whose first line
    is "# outside the CRD: why" must break it instead);
  - every `return` of every Lua file is reached by some test (a fixture for every branch);
  - every mutant of a Lua file (a string literal or a field name changed) fails some test;
  - every fixture is used, every action offered by discovery.lua has a definition and tests;
  - every CRD in crds/ has a health check;
  - the generated Argo CD configuration (scripts/gen-argocd-config.py) is up to date and reads
    back to the Lua sources, and `kubectl kustomize argocd/test-overlay` merges it into argocd-cm
    (keeping argocd-cm's own keys) and grants argocd-server the create of Checkpoints.

Prints each failure and closes with `N passed, M failed`; exits non-zero on a failure or when no
test was found.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

try:
    from lupa import lua51 as lupa_lua
except ImportError:  # lupa before 2.0 has one module, built against Lua 5.1 or LuaJIT
    import lupa as lupa_lua

ROOT = Path(__file__).resolve().parent.parent
CUSTOMIZATIONS = Path("argocd/resource_customizations")
TEST_OVERLAY = Path("argocd/test-overlay")
CRDS = Path("crds")

# What Argo CD accepts from a health check (util/lua/lua.go isValidHealthStatusCode); anything
# else is shown as Unknown with "Lua returned an invalid health status".
HEALTH_STATUSES = ("Healthy", "Progressing", "Suspended", "Degraded", "Missing", "Unknown")
OPERATIONS = ("create", "patch")
# The first line of a fixture that deliberately breaks its CRD (e.g. a phase a newer operator
# might add); every other fixture must satisfy it.
OUTSIDE_THE_CRD = "# outside the CRD:"
# Lua instructions one script may run (Argo CD stops a script after one second).
INSTRUCTION_BUDGET = 10_000_000

# The sandbox. gopher-lua's base library minus what loads code or reaches outside: dofile,
# loadfile, load, loadstring, require, module, getfenv/setfenv (getfenv(0) is the real globals).
BOOTSTRAP = r"""
local outer = _G
local pairs, ipairs, type, tostring, pcall, error = pairs, ipairs, type, tostring, pcall, error
local loadstring, setfenv, rawget = loadstring, setfenv, rawget
local sethook, getinfo = debug.sethook, debug.getinfo
local format, gsub, byte = string.format, string.gsub, string.byte
local floor, huge = math.floor, math.huge
local concat, sort = table.concat, table.sort
local stringlib, mathlib, tablelib = string, math, table
local string_mt = getmetatable("")

local BASE = {
  "assert", "collectgarbage", "error", "getmetatable", "ipairs", "next", "pairs", "pcall",
  "print", "rawequal", "rawget", "rawset", "select", "setmetatable", "tonumber", "tostring",
  "type", "unpack", "xpcall", "_VERSION",
}

local function copy(value)
  if type(value) ~= "table" then
    return value
  end
  local c = {}
  for k, v in pairs(value) do
    c[k] = copy(v)
  end
  return c
end

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function quote(s)
  return '"' .. gsub(s, '[%c"\\]', function(c)
    return ESCAPES[c] or format("\\u%04x", byte(c))
  end) .. '"'
end

local function number(n)
  if n ~= n or n == huge or n == -huge then
    error("json: unsupported value: " .. tostring(n), 0)
  end
  if n == floor(n) and n > -2^53 and n < 2^53 then
    return format("%d", n)
  end
  return format("%.17g", n)
end

-- As gopher-json encodes what a script returns: an empty table is an array, a table whose keys
-- are 1..n an array, anything else an object (number keys as strings); a table met twice fails.
local function encode(value, visited, out)
  local t = type(value)
  if t == "nil" then
    out[#out + 1] = "null"
  elseif t == "boolean" then
    out[#out + 1] = value and "true" or "false"
  elseif t == "number" then
    out[#out + 1] = number(value)
  elseif t == "string" then
    out[#out + 1] = quote(value)
  elseif t == "table" then
    if visited[value] then
      error("cannot encode recursively nested tables to JSON", 0)
    end
    visited[value] = true
    local count = 0
    for _ in pairs(value) do
      count = count + 1
    end
    local array = true
    for i = 1, count do
      if rawget(value, i) == nil then
        array = false
        break
      end
    end
    if array then
      out[#out + 1] = "["
      for i = 1, count do
        if i > 1 then
          out[#out + 1] = ","
        end
        encode(value[i], visited, out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k, v in pairs(value) do
        local kt, key = type(k), nil
        if kt == "string" then
          key = k
        elseif kt == "number" then
          key = number(k)
        elseif kt == "boolean" then
          key = tostring(k)
        else
          error("cannot encode a table with " .. kt .. " keys to JSON", 0)
        end
        keys[#keys + 1] = { key, v }
      end
      sort(keys, function(a, b) return a[1] < b[1] end)
      out[#out + 1] = "{"
      for i, kv in ipairs(keys) do
        if i > 1 then
          out[#out + 1] = ","
        end
        out[#out + 1] = quote(kv[1])
        out[#out + 1] = ":"
        encode(kv[2], visited, out)
      end
      out[#out + 1] = "}"
    end
  else
    error("cannot encode " .. t .. " to JSON", 0)
  end
end

local function to_json(value)
  local out = {}
  encode(value, {}, out)
  return concat(out)
end

-- Runs `source` as Argo CD does: returns ok, the result as JSON (or the error), its Lua type.
local function run(source, chunkname, template, open_libs, lines, budget)
  local fn, err = loadstring(source, "=" .. chunkname)
  if fn == nil then
    return false, err, "nil"
  end
  local env = {}
  for _, name in ipairs(BASE) do
    env[name] = outer[name]
  end
  env._G = env
  env.table = copy(tablelib)
  if open_libs then
    env.string = copy(stringlib)
    env.math = copy(mathlib)
  end
  env.obj = copy(template)
  setfenv(fn, env)
  string_mt.__index = open_libs and stringlib or nil
  local left = budget
  local source_name = "=" .. chunkname
  sethook(function(event, line)
    if event == "line" then
      if getinfo(2, "S").source == source_name then
        lines[line] = true
      end
    else
      left = left - 1
      if left <= 0 then
        error("the script ran past its instruction budget (an endless loop?)", 0)
      end
    end
  end, lines ~= nil and "l" or "", 1000)
  local ok, result = pcall(fn)
  sethook()
  string_mt.__index = stringlib
  if not ok then
    return false, tostring(result), "nil"
  end
  local encoded, json = pcall(to_json, result)
  if not encoded then
    return false, "encoding the script's result to JSON: " .. tostring(json), type(result)
  end
  return true, json, type(result)
end

return run
"""


class ScriptError(Exception):
    """A Lua script failed, or returned what Argo CD cannot use."""


class Lua:
    """One Lua 5.1 state; every script runs in a fresh sandbox environment of it."""

    def __init__(self) -> None:
        self.runtime = lupa_lua.LuaRuntime(
            unpack_returned_tuples=True, register_eval=False, register_builtins=False
        )
        version = self.runtime.eval("_VERSION")
        if version != "Lua 5.1":
            raise SystemExit(f"lupa runs {version}; Argo CD's gopher-lua is Lua 5.1: install lupa>=2")
        self._run = self.runtime.execute(BOOTSTRAP)
        self.lines: dict[str, Any] = {}

    def table(self, value: Any) -> Any:
        """`value` (parsed YAML) as Lua values, as Argo CD's decodeValue makes them."""
        if isinstance(value, dict):
            table = self.runtime.table()
            for key, item in value.items():
                if item is not None:
                    table[str(key)] = self.table(item)
            return table
        if isinstance(value, list):
            table = self.runtime.table()
            index = 1
            for item in value:
                if item is not None:
                    table[index] = self.table(item)
                    index += 1
            return table
        return value

    def run(
        self, source: str, chunkname: str, obj: Any, open_libs: bool, cover: bool = True
    ) -> tuple[Any, str]:
        """Runs a script on `obj` (a Lua table from `table`); returns its result and Lua type."""
        lines = None
        if cover:
            lines = self.lines.setdefault(chunkname, self.runtime.table())
        ok, payload, lua_type = self._run(
            source, chunkname, obj, open_libs, lines, INSTRUCTION_BUDGET // 1000
        )
        if not ok:
            raise ScriptError(f"Lua error: {payload}")
        return json.loads(payload), lua_type

    def covered(self, chunkname: str) -> set[int]:
        lines = self.lines.get(chunkname)
        return set() if lines is None else {int(k) for k in lines.keys()}


class _Loader(yaml.SafeLoader):
    """YAML as Kubernetes reads it into JSON: timestamps stay strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)


def load_yaml_all(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------------------------
# Results


class Results:
    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.passed = 0
        self.failed = 0

    def ok(self, name: str) -> None:
        self.passed += 1
        if self.verbose:
            print(f"ok    {name}")

    def fail(self, name: str, detail: str) -> None:
        self.failed += 1
        print(f"FAIL  {name}")
        for line in detail.rstrip("\n").split("\n"):
            print(f"      {line}")

    def check(self, name: str, problems: list[str]) -> bool:
        if problems:
            self.fail(name, "\n".join(problems))
            return False
        self.ok(name)
        return True


def show(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=True, default_flow_style=False, width=100).rstrip("\n")


def diff(expected: Any, got: Any) -> str:
    lines = difflib.unified_diff(
        show(expected).split("\n"), show(got).split("\n"), "expected", "got", lineterm="", n=2
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# CRD schemas


def load_crds(root: Path) -> dict[tuple[str, str], dict]:
    """(group, kind) -> the first served version of its CRD and that version's openAPIV3Schema."""
    schemas = {}
    for path in sorted((root / CRDS).glob("*.yaml")):
        for crd in load_yaml_all(path.read_text(encoding="utf-8")):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            version = next(v for v in spec["versions"] if v.get("served", True))
            schemas[(spec["group"], spec["names"]["kind"])] = {
                "version": version["name"],
                "schema": version["schema"]["openAPIV3Schema"],
            }
    return schemas


_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def validate(schema: dict, value: Any, path: str, errors: list[str]) -> None:
    """The structural part of Kubernetes' validation: types, unknown fields, required, enums,
    patterns, lengths and ranges (CEL rules and formats are not checked)."""
    where = path or "."
    if value is None:
        if not schema.get("nullable"):
            errors.append(f"{where}: null is not allowed")
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not _TYPES["integer"](value) and not isinstance(value, str):
            errors.append(f"{where}: must be an integer or a string, not {value!r}")
        return
    kind = schema.get("type")
    if kind is not None and not _TYPES[kind](value):
        errors.append(f"{where}: must be of type {kind}, not {type(value).__name__} {value!r}")
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{where}: longer than {schema['maxLength']}")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: shorter than {schema['minLength']}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: above the maximum {schema['maximum']}")
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            errors.append(f"{where}: more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            validate(schema.get("items", {}), item, f"{path}[{i}]", errors)
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{where}: required field {name} is missing")
        for name, item in value.items():
            if properties is not None and name in properties:
                validate(properties[name], item, f"{path}.{name}", errors)
            elif isinstance(extra, dict):
                validate(extra, item, f"{path}.{name}", errors)
            elif properties is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{name}: unknown field")


def check_object(crds: dict, obj: Any, what: str) -> list[str]:
    """`obj` is a MAOS object its CRD accepts (apart from CEL rules)."""
    if not isinstance(obj, dict):
        return [f"{what}: not an object"]
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    group, _, version = api_version.rpartition("/")
    crd = crds.get((group, kind))
    if crd is None:
        return [f"{what}: no CRD in crds/ for {api_version} {kind}"]
    errors: list[str] = []
    if version != crd["version"]:
        errors.append(f"{what}: apiVersion {api_version}, but the CRD serves {crd['version']}")
    # The API server gives every object these, whatever its schema says.
    schema = dict(crd["schema"])
    schema["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        **schema.get("properties", {}),
    }
    validate(schema, obj, "", errors)
    return [f"{what}: {e}" for e in errors]


# ----------------------------------------------------------------------------------------------
# What Argo CD does with a script's result


def health_of(result: Any, lua_type: str) -> dict:
    if lua_type != "table":
        raise ScriptError(f"expect table output from Lua script, not {lua_type}")
    if not isinstance(result, dict):
        raise ScriptError(f"Argo CD cannot read a health status from {json.dumps(result)}")
    status, message = result.get("status", ""), result.get("message", "")
    if not isinstance(status, str) or not isinstance(message, str):
        raise ScriptError(f"status and message must be strings: {json.dumps(result)}")
    if status not in HEALTH_STATUSES:
        raise ScriptError(
            f"status {status!r} is not one of {', '.join(HEALTH_STATUSES)}: Argo CD would show "
            "Unknown (Lua returned an invalid health status)"
        )
    return {"status": status, "message": message}


def normal_action(name: str, value: Any) -> dict:
    if isinstance(value, list):  # {} in Lua: enabled, no display settings
        value = {}
    if not isinstance(value, dict):
        raise ScriptError(f"action {name}: {json.dumps(value)} is not a table")
    action = {
        "name": name,
        "disabled": value.get("disabled", False),
        "iconClass": value.get("iconClass", ""),
        "displayName": value.get("displayName", ""),
    }
    if not isinstance(action["disabled"], bool):
        raise ScriptError(f"action {name}: disabled must be a boolean")
    for key in ("iconClass", "displayName"):
        if not isinstance(action[key], str):
            raise ScriptError(f"action {name}: {key} must be a string")
    return action


def actions_of(result: Any, lua_type: str) -> list[dict]:
    if lua_type != "table":
        raise ScriptError(f"expect table output from Lua script, not {lua_type}")
    if result == []:
        return []
    if not isinstance(result, dict):
        raise ScriptError(f"discovery returned {json.dumps(result)}, not a table of actions")
    return sorted((normal_action(name, value) for name, value in result.items()), key=_by_name)


def _by_name(action: dict) -> str:
    return action["name"]


def clean_returned(new: Any, old: Any) -> Any:
    """Argo CD's cleanReturnedObj: an empty table the script returns where the object had a map
    is that map again, not an empty list."""
    if isinstance(new, dict) and isinstance(old, dict):
        for key, old_value in old.items():
            if key not in new:
                continue
            new_value = new[key]
            if isinstance(new_value, list) and isinstance(old_value, dict) and not new_value:
                new[key] = old_value
            else:
                new[key] = clean_returned(new_value, old_value)
    elif isinstance(new, list) and isinstance(old, list):
        for i in range(min(len(new), len(old))):
            new[i] = clean_returned(new[i], old[i])
    return new


def impacted_of(result: Any, lua_type: str, source: dict) -> list[tuple[str, Any]]:
    """(operation, object) per resource an action changes, as ExecuteResourceAction reads them."""
    if lua_type != "table":
        raise ScriptError(f"expect table output from Lua script, not {lua_type}")
    if isinstance(result, dict):  # the old style: the changed source object
        return [("patch", clean_returned(result, source))]
    impacted = []
    for i, item in enumerate(result):
        if not isinstance(item, dict) or set(item) - {"operation", "resource"}:
            raise ScriptError(f"item {i + 1}: not a table of operation and resource")
        operation, resource = item.get("operation"), item.get("resource")
        if operation not in OPERATIONS:
            raise ScriptError(f"item {i + 1}: unsupported operation: {json.dumps(operation)}")
        if not isinstance(resource, dict) or not resource.get("kind") or not resource.get("apiVersion"):
            raise ScriptError(f"item {i + 1}: the resource needs apiVersion and kind")
        if operation == "patch":
            same = all(
                resource.get(k) == source.get(k) for k in ("apiVersion", "kind")
            ) and all(
                resource.get("metadata", {}).get(k) == source["metadata"].get(k)
                for k in ("name", "namespace")
            )
            if not same:
                raise ScriptError(f"item {i + 1}: Argo CD patches only the source resource")
            resource = clean_returned(resource, source)
        impacted.append((operation, resource))
    return impacted


def expected_impacted(expected: Any) -> list[tuple[str, Any]]:
    """An expectedOutputPath file: one object (a patch of the source), or Argo CD's list of
    `{k8sOperation, unstructuredObj}`."""
    if isinstance(expected, list):
        return [(item["k8sOperation"], item["unstructuredObj"]) for item in expected]
    return [("patch", expected)]


# ----------------------------------------------------------------------------------------------
# The tests of one kind


@dataclass
class Script:
    path: Path
    chunkname: str
    source: str
    # Each a function of a (possibly mutated) source: None when the test passes, or why not.
    tests: list[Callable[[str], str | None]]


class Suite:
    def __init__(self, root: Path, results: Results, lua: Lua, crds: dict, open_libs: set[str]):
        self.root = root
        self.results = results
        self.lua = lua
        self.crds = crds
        self.open_libs = open_libs
        self.scripts: dict[Path, Script] = {}
        self.fixtures_used: set[Path] = set()
        self.fixtures_checked: set[Path] = set()

    def script(self, path: Path) -> Script:
        if path not in self.scripts:
            chunkname = str(path.relative_to(self.root / CUSTOMIZATIONS))
            self.scripts[path] = Script(path, chunkname, path.read_text(encoding="utf-8"), [])
        return self.scripts[path]

    def fixture(self, base: Path, relative: Any, what: str) -> tuple[Any, str | None]:
        """Loads a testdata file named by a test; checks it against its CRD once."""
        if not isinstance(relative, str) or not relative:
            return None, f"{what} is missing"
        path = (base / relative).resolve()
        if not path.is_file():
            return None, f"{what} {relative}: no such file"
        self.fixtures_used.add(path)
        try:
            data = load_yaml(path)
        except yaml.YAMLError as e:
            return None, f"{what} {relative}: not YAML: {e}"
        if path not in self.fixtures_checked:
            self.fixtures_checked.add(path)
            objects = [i.get("unstructuredObj") if isinstance(i, dict) else i for i in data] if isinstance(data, list) else [data]
            problems = []
            for obj in objects:
                problems += check_object(self.crds, obj, rel(path))
            if path.read_text(encoding="utf-8").startswith(OUTSIDE_THE_CRD):
                # What the API server would refuse today, kept to test a check's fallback: it
                # must really be outside the CRD, or the marker is wrong.
                self.results.check(
                    f"fixture {rel(path)} is outside its CRD, as its first line says",
                    [] if problems else ["it satisfies the CRD: remove the marker"],
                )
            else:
                self.results.check(f"fixture {rel(path)} satisfies its CRD", problems)
        return data, None

    def kind(self, kind_dir: Path) -> None:
        group, kind = kind_dir.parent.name, kind_dir.name
        key = f"{group}_{kind}"
        open_libs = key in self.open_libs
        health = kind_dir / "health.lua"
        if health.is_file():
            self.health_tests(kind_dir, health, group, kind, open_libs)
        else:
            self.results.fail(f"{group}/{kind}", "no health.lua")
        if (kind_dir / "actions").is_dir():
            self.action_tests(kind_dir / "actions", group, kind)
        testdata = [p.resolve() for p in kind_dir.rglob("testdata/*") if p.is_file()]
        unused = sorted(rel(p) for p in testdata if p not in self.fixtures_used)
        self.results.check(
            f"{group}/{kind}: every testdata file is used by a test",
            [f"{u} is used by no test" for u in unused],
        )

    def run_health(self, script: Script, source: str, obj: Any, open_libs: bool, cover: bool) -> dict:
        result, lua_type = self.lua.run(source, script.chunkname, obj, open_libs, cover)
        return health_of(result, lua_type)

    def health_tests(self, kind_dir: Path, health: Path, group: str, kind: str, open_libs: bool) -> None:
        script = self.script(health)
        spec_path = kind_dir / "health_test.yaml"
        if not spec_path.is_file():
            self.results.fail(f"{group}/{kind}", "health.lua has no health_test.yaml")
            return
        spec = load_yaml(spec_path) or {}
        tests = spec.get("tests") or []
        if not tests:
            self.results.fail(f"{rel(spec_path)}", "no tests")
        for i, test in enumerate(tests):
            test = test or {}
            name = f"health {group}/{kind} {test.get('inputPath', f'#{i + 1}')}"
            obj, problem = self.fixture(kind_dir, test.get("inputPath"), "inputPath")
            if problem is None and not isinstance(obj, dict):
                problem = "the input is not an object"
            if problem is None and (obj.get("apiVersion", "").split("/")[0], obj.get("kind")) != (group, kind):
                problem = f"the input is a {obj.get('apiVersion')} {obj.get('kind')}, not a {group} {kind}"
            expected = test.get("healthStatus") or {}
            if problem is None and expected.get("status") not in HEALTH_STATUSES:
                problem = f"healthStatus.status {expected.get('status')!r} is not one of {HEALTH_STATUSES}"
            if problem is not None:
                self.results.fail(name, problem)
                continue
            want = {"status": expected["status"], "message": expected.get("message", "")}
            lua_obj = self.lua.table(obj)

            def case(source: str, lua_obj=lua_obj, want=want, cover: bool = False) -> str | None:
                try:
                    got = self.run_health(script, source, lua_obj, open_libs, cover)
                except ScriptError as e:
                    return str(e)
                return None if got == want else diff(want, got)

            problem = case(script.source, cover=True)
            if problem is None:
                script.tests.append(case)  # a mutant must fail a test the script passes
                self.results.ok(name)
            else:
                self.results.fail(name, problem)

    def action_tests(self, actions_dir: Path, group: str, kind: str) -> None:
        discovery = actions_dir / "discovery.lua"
        spec_path = actions_dir / "action_test.yaml"
        defined = sorted(p.parent.name for p in actions_dir.glob("*/action.lua"))
        if not discovery.is_file():
            self.results.fail(f"{group}/{kind} actions", "actions/ has no discovery.lua")
            return
        if not spec_path.is_file():
            self.results.fail(f"{group}/{kind} actions", "actions/ has no action_test.yaml")
            return
        spec = load_yaml(spec_path) or {}
        discovery_tests = spec.get("discoveryTests") or []
        action_tests = spec.get("actionTests") or []
        offered: set[str] = set()
        script = self.script(discovery)
        for i, test in enumerate(discovery_tests):
            test = test or {}
            name = f"discovery {group}/{kind} {test.get('inputPath', f'#{i + 1}')}"
            obj, problem = self.fixture(actions_dir, test.get("inputPath"), "inputPath")
            if problem is None and not isinstance(obj, dict):
                problem = "the input is not an object"
            result = test.get("result")
            if problem is None and not isinstance(result, list):
                problem = "result must be the list of actions discovery.lua returns"
            if problem is None:
                try:
                    want = sorted((normal_action(a.get("name"), a) for a in result), key=_by_name)
                except (ScriptError, AttributeError) as e:
                    problem = f"result: {e}"
            if problem is not None:
                self.results.fail(name, problem)
                continue
            offered |= {a["name"] for a in want}
            lua_obj = self.lua.table(obj)

            def case(source: str, lua_obj=lua_obj, want=want, cover: bool = False) -> str | None:
                try:
                    result, lua_type = self.lua.run(source, script.chunkname, lua_obj, False, cover)
                    got = actions_of(result, lua_type)
                except ScriptError as e:
                    return str(e)
                return None if got == want else diff(want, got)

            problem = case(script.source, cover=True)
            if problem is None:
                script.tests.append(case)  # a mutant must fail a test the script passes
                self.results.ok(name)
            else:
                self.results.fail(name, problem)

        tested: set[str] = set()
        for i, test in enumerate(action_tests):
            test = test or {}
            action = test.get("action")
            name = f"action {group}/{kind} {action} {test.get('inputPath', f'#{i + 1}')}"
            path = actions_dir / str(action) / "action.lua"
            if not isinstance(action, str) or not path.is_file():
                self.results.fail(name, f"no actions/{action}/action.lua")
                continue
            tested.add(action)
            obj, problem = self.fixture(actions_dir, test.get("inputPath"), "inputPath")
            if problem is None and not isinstance(obj, dict):
                problem = "the input is not an object"
            expected = None
            if problem is None:
                expected, problem = self.fixture(
                    actions_dir, test.get("expectedOutputPath"), "expectedOutputPath"
                )
            if problem is None and isinstance(expected, list) and not (
                actions_dir / test["expectedOutputPath"]
            ).read_text(encoding="utf-8").startswith("-"):
                # Argo CD's own harness (util/lua/custom_actions_test.go) takes a file for a list
                # only when its first character is "-".
                problem = "expectedOutputPath: a list must start with its first '-' (no comment before it)"
            if problem is None:
                try:
                    want = json.loads(json.dumps(expected_impacted(expected)))
                except (KeyError, TypeError) as e:
                    problem = f"expectedOutputPath: not an object nor a list of k8sOperation and unstructuredObj ({e})"
            if problem is not None:
                self.results.fail(name, problem)
                continue
            script = self.script(path)
            lua_obj = self.lua.table(obj)

            def case(source: str, script=script, lua_obj=lua_obj, obj=obj, want=want, cover: bool = False) -> str | None:
                try:
                    result, lua_type = self.lua.run(source, script.chunkname, lua_obj, False, cover)
                    got = [list(i) for i in impacted_of(result, lua_type, json.loads(json.dumps(obj)))]
                except ScriptError as e:
                    return str(e)
                if got != [list(i) for i in want]:
                    return diff([{"k8sOperation": o, "unstructuredObj": r} for o, r in want],
                                [{"k8sOperation": o, "unstructuredObj": r} for o, r in got])
                problems = []
                for operation, resource in got:
                    problems += check_object(self.crds, resource, f"the {resource.get('kind')} to {operation}")
                return "\n".join(problems) or None

            problem = case(script.source, cover=True)
            if problem is None:
                script.tests.append(case)  # a mutant must fail a test the script passes
                self.results.ok(name)
            else:
                self.results.fail(name, problem)

        problems = []
        if not discovery_tests:
            problems.append("action_test.yaml has no discoveryTests")
        for action in sorted(offered - set(defined)):
            problems.append(f"discovery offers {action}, which has no actions/{action}/action.lua")
        for action in sorted(set(defined) - offered):
            problems.append(f"actions/{action}/action.lua is never offered by a discovery test")
        for action in sorted(set(defined) - tested):
            problems.append(f"actions/{action}/action.lua has no actionTests")
        self.results.check(f"{group}/{kind}: every action is offered, defined and tested", problems)


# ----------------------------------------------------------------------------------------------
# Branches and mutants

_RETURN = re.compile(r"\breturn\b")


def lua_tokens(source: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]], str]:
    """Spans of string literal contents and of field names (`.name`) outside comments, and the
    source with comments and strings blanked (for finding keywords)."""
    strings, fields = [], []
    code = list(source)
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if source.startswith("--", i):
            end = source.find("]]", i) + 2 if source.startswith("--[[", i) else source.find("\n", i)
            end = n if end < 2 or end == -1 else end
            for j in range(i, end):
                if code[j] != "\n":
                    code[j] = " "
            i = end
        elif c in "\"'":
            j = i + 1
            while j < n and source[j] != c:
                j += 2 if source[j] == "\\" else 1
            strings.append((i + 1, j))
            for k in range(i + 1, j):
                code[k] = " "
            i = j + 1
        elif c == "." and i + 1 < n and (source[i + 1].isalpha() or source[i + 1] == "_") and (
            i == 0 or not (source[i - 1] == "." or source[i - 1].isdigit())
        ):
            j = i + 1
            while j < n and (source[j].isalnum() or source[j] == "_"):
                j += 1
            fields.append((i + 1, j))
            i = j
        else:
            i += 1
    return strings, fields, "".join(code)


def return_lines(source: str) -> dict[int, str]:
    _, _, code = lua_tokens(source)
    lines = source.split("\n")
    return {
        number: lines[number - 1].strip()
        for number, line in enumerate(code.split("\n"), start=1)
        if _RETURN.search(line)
    }


def mutants(source: str) -> list[tuple[str, str]]:
    """(description, mutated source) for every string literal and field name."""
    strings, fields, _ = lua_tokens(source)
    out = []
    for start, end in strings:
        line = source.count("\n", 0, start) + 1
        out.append((f"line {line}: \"{source[start:end]}\" changed",
                    source[:start] + source[start:end] + "~mutant" + source[end:]))
    for start, end in fields:
        line = source.count("\n", 0, start) + 1
        out.append((f"line {line}: field .{source[start:end]} renamed",
                    source[:end] + "_mutant" + source[end:]))
    return out


def check_scripts(suite: Suite, results: Results) -> None:
    for script in sorted(suite.scripts.values(), key=lambda s: s.chunkname):
        covered = suite.lua.covered(script.chunkname)
        missing = {n: text for n, text in return_lines(script.source).items() if n not in covered}
        results.check(
            f"every return of {script.chunkname} is reached by a test",
            [f"line {n}: `{text}` is reached by no test: add a fixture for that branch"
             for n, text in sorted(missing.items())],
        )
        if not script.tests:
            continue
        survived = []
        tests = list(script.tests)
        all_mutants = mutants(script.source)
        for description, source in all_mutants:
            for index, test in enumerate(tests):
                if test(source) is not None:
                    tests.insert(0, tests.pop(index))  # the likeliest killer of the next mutant
                    break
            else:
                survived.append(f"{description}: every test still passes")
        if not results.check(
            f"every mutant of {script.chunkname} fails a test ({len(all_mutants)} mutants)",
            survived,
        ):
            print("      (a test that depends on each of these is missing, or the code is dead)")


# ----------------------------------------------------------------------------------------------
# The generated configuration


def load_generator(root: Path):
    path = root / "scripts" / "gen-argocd-config.py"
    sys.dont_write_bytecode = True  # no scripts/__pycache__ in the work tree
    spec = importlib.util.spec_from_file_location("gen_argocd_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_generated(root: Path, gen, results: Results) -> dict[str, str]:
    """The committed generated files are what the generator makes now, and read back to the Lua."""
    try:
        rendered = gen.render(root)
        data = gen.config_data(root)
    except gen.GenerateError as e:
        results.fail("the Argo CD configuration can be generated", str(e))
        return {}
    for path, text in rendered.items():
        current = (root / path).read_text(encoding="utf-8") if (root / path).is_file() else ""
        problems = []
        if current != text:
            problems.append(f"{path} is out of date: run scripts/gen-argocd-config.py")
            problems += list(difflib.unified_diff(
                current.split("\n"), text.split("\n"), f"{path} (committed)", f"{path} (generated)",
                lineterm="", n=1,
            ))[:60]
        results.check(f"{path} is up to date", problems)

    problems = []
    patch = load_yaml_all(rendered[gen.COMPONENT_PATCH])
    values = load_yaml_all(rendered[gen.HELM_VALUES])
    if len(patch) != 1 or patch[0].get("kind") != "ConfigMap" or patch[0]["metadata"]["name"] != "argocd-cm":
        problems.append(f"{gen.COMPONENT_PATCH}: not one ConfigMap argocd-cm")
    elif patch[0].get("data") != data:
        problems.append(f"{gen.COMPONENT_PATCH}: its data does not read back to the Lua sources")
    if len(values) != 1 or values[0].get("configs", {}).get("cm") != data:
        problems.append(f"{gen.HELM_VALUES}: configs.cm does not read back to the Lua sources")
    for key, value in data.items():
        _, _, rest = key.partition("resource.customizations.")
        section, _, group_kind = rest.partition(".")
        group, _, kind = group_kind.rpartition("_")
        kind_dir = root / CUSTOMIZATIONS / group / kind
        if section == "health":
            if value != (kind_dir / "health.lua").read_text(encoding="utf-8"):
                problems.append(f"{key} is not {kind_dir / 'health.lua'}")
        elif section == "actions":
            actions = yaml.safe_load(value)
            if actions.get("discovery.lua") != (kind_dir / "actions/discovery.lua").read_text(encoding="utf-8"):
                problems.append(f"{key}: discovery.lua is not the file's text")
            names = sorted(p.parent.name for p in (kind_dir / "actions").glob("*/action.lua"))
            definitions = actions.get("definitions") or []
            if sorted(d.get("name") for d in definitions) != names:
                problems.append(f"{key}: definitions are not {names}")
            for d in definitions:
                lua = kind_dir / "actions" / str(d.get("name")) / "action.lua"
                if lua.is_file() and d.get("action.lua") != lua.read_text(encoding="utf-8"):
                    problems.append(f"{key}: action {d.get('name')} is not {lua}")
            if set(actions) - {"discovery.lua", "definitions"}:
                problems.append(f"{key}: unexpected keys {sorted(set(actions) - {'discovery.lua', 'definitions'})}")
        elif section != "useOpenLibs":
            problems.append(f"{key}: not a key Argo CD reads")
    results.check("the generated configuration reads back to the Lua sources", problems)
    return data


def check_kustomize(root: Path, data: dict[str, str], results: Results, skip: bool) -> None:
    name = f"kubectl kustomize {TEST_OVERLAY} merges the component into argocd-cm, with its RBAC"
    kubectl, kustomize = shutil.which("kubectl"), shutil.which("kustomize")
    if kubectl is None and kustomize is None:
        if skip:
            print(f"skip  {name} (no kubectl or kustomize on the PATH)")
        else:
            results.fail(name, "neither kubectl nor kustomize is on the PATH (--skip-kustomize to skip)")
        return
    command = [kubectl, "kustomize"] if kubectl else [kustomize, "build"]
    build = subprocess.run(
        [*command, str(TEST_OVERLAY)], cwd=root, capture_output=True, text=True, timeout=120
    )
    if build.returncode != 0:
        results.fail(name, f"{' '.join(command)} {TEST_OVERLAY} failed:\n{build.stderr}")
        return
    built = [d for d in load_yaml_all(build.stdout)
             if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "argocd-cm"]
    base = load_yaml(root / TEST_OVERLAY / "argocd-cm.yaml")
    problems = []
    if len(built) != 1:
        problems.append(f"the build has {len(built)} ConfigMaps argocd-cm, not one")
    else:
        got = built[0].get("data") or {}
        for key, value in data.items():
            if key not in got:
                problems.append(f"{key} is missing")
            elif got[key] != value:
                problems.append(f"{key} differs from the generated value")
        for key, value in (base.get("data") or {}).items():
            if got.get(key) != value:
                problems.append(f"the overlay's own {key} was not kept")
        if built[0]["metadata"].get("namespace") != base["metadata"].get("namespace"):
            problems.append("the ConfigMap's namespace changed")
    problems += checkpoint_rbac(build.stdout)
    results.check(name, problems)


def checkpoint_rbac(manifests: str) -> list[str]:
    """The build lets argocd-server create Checkpoints (the checkpoint-now action)."""
    objects = load_yaml_all(manifests)
    granting = {
        o["metadata"]["name"] for o in objects
        if o.get("kind") == "ClusterRole" and any(
            "maos.dev" in r.get("apiGroups", []) and "checkpoints" in r.get("resources", [])
            and "create" in r.get("verbs", []) for r in o.get("rules") or []
        )
    }
    bound = [
        o for o in objects
        if o.get("kind") == "ClusterRoleBinding" and o["roleRef"].get("name") in granting
        and any(s.get("kind") == "ServiceAccount" and s.get("name") == "argocd-server"
                for s in o.get("subjects") or [])
    ]
    return [] if bound else ["no ClusterRole bound to argocd-server lets it create maos.dev checkpoints"]


# ----------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="name every passing test too")
    parser.add_argument("--skip-kustomize", action="store_true",
                        help="pass when neither kubectl nor kustomize is installed")
    args = parser.parse_args()
    started = time.monotonic()
    results = Results(args.verbose)
    root = ROOT

    gen = load_generator(root)
    crds = load_crds(root)
    lua = Lua()
    suite = Suite(root, results, lua, crds, set(gen.USE_OPEN_LIBS))
    kind_dirs = sorted(p.parent for p in (root / CUSTOMIZATIONS).glob("*/*/health.lua"))
    kind_dirs += sorted(
        p.parent.parent for p in (root / CUSTOMIZATIONS).glob("*/*/actions/discovery.lua")
        if p.parent.parent not in kind_dirs
    )
    for kind_dir in kind_dirs:
        suite.kind(kind_dir)
    if suite.scripts:
        results.check(
            "every CRD in crds/ has a health check",
            [f"{group}/{kind} has no {CUSTOMIZATIONS}/{group}/{kind}/health.lua"
             for group, kind in sorted(crds)
             if not (root / CUSTOMIZATIONS / group / kind / "health.lua").is_file()],
        )
        check_scripts(suite, results)
        data = check_generated(root, gen, results)
        if data:
            check_kustomize(root, data, results, args.skip_kustomize)

    elapsed = time.monotonic() - started
    started_ns = os.environ.get("ARGOCD_CHECK_STARTED_NS")
    if started_ns:
        total = (time.time_ns() - int(started_ns)) / 1e9
        print(f"argocd: checked in {total:.1f} s ({elapsed:.1f} s of tests)")
    if results.passed + results.failed == 0:
        print(f"no tests found under {CUSTOMIZATIONS}")
    print(f"{results.passed} passed, {results.failed} failed")
    return 1 if results.failed or results.passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
