#!/bin/sh
# Install prefbudget from a source tree into a fresh virtual environment.
#
# Usage: docker/install.sh VENV_DIR SOURCE_DIR
#
# The Dockerfile's builder stage and ci/check-container-recipe.sh both run this
# script, so CI exercises the exact install steps of the image. It installs the
# runtime dependencies only (no dev or demo extras) and no editable install,
# because the runtime stage copies the virtual environment without the source.
# The Dockerfile sets PIP_NO_CACHE_DIR so the image keeps no pip cache, while
# CI reuses its cache between runs.
set -eu

if [ "$#" -ne 2 ]; then
    echo "usage: $0 VENV_DIR SOURCE_DIR" >&2
    exit 2
fi
venv_dir=$1
source_dir=$2

python3 -m venv "$venv_dir"
"$venv_dir/bin/python" -m pip install --quiet --upgrade pip
"$venv_dir/bin/python" -m pip install --quiet "$source_dir"

# Fail the build here, not at container start, if the package does not import
# or the migrations were left out of the wheel.
"$venv_dir/bin/python" - <<'PY'
import importlib.resources

import app.main  # noqa: F401
import solvers  # noqa: F401

migrations = importlib.resources.files("migrations")
if not migrations.joinpath("alembic.ini").is_file():
    raise SystemExit("migrations/alembic.ini is missing from the installed package")
if not any(migrations.joinpath("versions").iterdir()):
    raise SystemExit("migrations/versions is empty in the installed package")
PY
"$venv_dir/bin/prefbudget" --help >/dev/null
