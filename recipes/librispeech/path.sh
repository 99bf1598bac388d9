# Environment for the recipe: the project's virtualenv when there is one, and the vqaudio command.
__root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$__root/.venv/bin/vqaudio" ]; then
  export PATH="$__root/.venv/bin:$PATH"
fi
command -v vqaudio > /dev/null || { echo "vqaudio not found: run 'bash tools/venv.sh' in $__root first" >&2; return 1; }
export PYTHONUNBUFFERED=1
unset __root
