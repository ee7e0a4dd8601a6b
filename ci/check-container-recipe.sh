#!/usr/bin/env bash
# Check the container recipe as far as a machine without a Docker engine can:
#
# 1. Validate docker-compose.yml with `docker compose config -q` (Compose v2
#    plugin) or `docker-compose config -q` (v1), whichever client is installed.
#    Neither needs a running engine for `config`. In CI, as root, Debian's
#    docker-compose is installed when neither client is there. Elsewhere,
#    with no client, the script prints a notice and goes on with the other checks.
# 2. Lint the Dockerfile's structure and cross-check the environment variables
#    of the Dockerfile and the compose file against app.settings and the
#    configuration table in README.md (ci/lint_container_recipe.py).
# 3. Copy the files that .dockerignore lets into the build context, run
#    docker/install.sh on them into a throwaway virtual environment (the same
#    step the Dockerfile's builder runs), then import the app, migrate a
#    scratch SQLite database and print the CLI help from that environment,
#    outside the source tree.
#
# Usage: bash ci/check-container-recipe.sh   (from any directory)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

python=${PYTHON:-python3}
lint_python=${LINT_PYTHON:-$repo/.venv/bin/python}
if [ ! -x "$lint_python" ]; then
    lint_python=$python
fi

# Dummy values for the variables that docker-compose.yml requires to be set.
export POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-compose-config-check}
export PREFBUDGET_ADMIN_KEY=${PREFBUDGET_ADMIN_KEY:-compose-config-check}

echo "== docker-compose.yml"
have_compose_client() {
    docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1
}
# Debian ships Compose v1 (docker-compose) but not the v2 plugin. In CI, as
# root, install it so that the schema check runs on a new machine as well.
if ! have_compose_client && [ "${CI:-}" = "true" ] && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's docker-compose for the schema check"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq docker-compose >/dev/null; } \
        || echo "could not install docker-compose"
fi
if docker compose version >/dev/null 2>&1; then
    docker compose -f docker-compose.yml config -q
    echo "docker compose config: valid"
elif command -v docker-compose >/dev/null 2>&1; then
    docker-compose -f docker-compose.yml config -q
    echo "docker-compose config: valid"
else
    echo "no Compose client installed (docker compose or docker-compose);" \
        "skipping the schema check of docker-compose.yml"
fi

echo "== Dockerfile and configuration table"
"$lint_python" ci/lint_container_recipe.py

echo "== install steps of the Dockerfile"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
context=$scratch/context
mkdir -p "$context/docker"
# The same paths the Dockerfile copies and .dockerignore admits.
cp pyproject.toml README.md "$context/"
cp docker/install.sh "$context/docker/install.sh"
cp -r app solvers migrations "$context/"
find "$context" -name __pycache__ -type d -prune -exec rm -rf {} +

PATH="$(dirname "$(command -v "$python")"):$PATH" \
    sh "$context/docker/install.sh" "$scratch/venv" "$context"

# Run from an empty directory, so only the installed package can be imported.
mkdir "$scratch/run"
(
    cd "$scratch/run"
    export PREFBUDGET_DATABASE_URL="sqlite:///$scratch/run/check.db"
    "$scratch/venv/bin/python" -c \
        "import app.main, app.auth.keys, app.metrics; app.main.create_app"
    "$scratch/venv/bin/prefbudget" db upgrade
    "$scratch/venv/bin/prefbudget" worker --help >/dev/null
)
echo "install steps: the app installs, imports and migrates from a fresh venv"
