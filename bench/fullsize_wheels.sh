#!/usr/bin/env bash
# The wheels bench/fullsize.sh needs on a GPU machine without internet, beyond its Python image and
# ../shared/tools/device-wheels.sh's: written into .whl/ at the root of the repository you run it
# from (kept out of git through .git/info/exclude), where bench/fullsize.sh installs them.
#
#   bash bench/fullsize_wheels.sh            # here, with PyPI; PYTHON=... names the venv's python
#
# * The gpu extra (requirements-gpu.lock, every file checked against its hash): deepspeed is
#   published as a source archive only, so it is built here into a pure-Python wheel without compiled
#   ops (DS_BUILD_OPS=0: ZeRO with torch's AdamW needs none; the build imports this venv's CPU torch
#   only to read its version); its dependencies are pure wheels (ninja: one for any CPython on x86-64).
# * The trainer's and the service's packages the image lacks: peft (the image's version is not the
#   pin), pydantic-settings and python-dotenv, at requirements.lock's versions, for Python 3.12.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
PY=${PYTHON:-.venv/bin/python}
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")" .whl
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"

locked() {  # the version requirements.lock pins for a package
  grep -oE "^$1==[^ ]+" requirements.lock | head -n 1
}
extra=("$(locked peft)" "$(locked pydantic-settings)" "$(locked python-dotenv)")

built=$(mktemp -d)
trap 'rm -rf "$built"' EXIT
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation --require-hashes -r requirements-gpu.lock \
  -w "$built"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$built" "${extra[@]}"
for wheel in "$built"/*.whl; do
  case $(basename "$wheel") in
    *-py3-none-any.whl|*-py3-none-manylinux*x86_64*.whl) ;;
    *) echo "not a pure or any-CPython x86-64 wheel: $(basename "$wheel")" >&2; exit 1 ;;
  esac
  name=$(basename "$wheel" | cut -d- -f1)
  rm -f .whl/"$name"-*.whl  # one version of each package: two stop the whole install
  cp "$wheel" .whl/
done
ls -1 "$built"
du -sh .whl
