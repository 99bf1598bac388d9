#!/usr/bin/env bash
# Kaldi-style option parsing. Source it after defining the script's variables and $help_message:
#   --foo-bar VALUE   sets the existing variable foo_bar (dashes become underscores); an option whose
#                     variable does not exist is an error
#   booleans          a variable whose default is true/false only takes true or false
#   --config FILE     sources FILE (lines like foo_bar=value) before the other options
#   --help, -h        prints $help_message and exits 0
# Options end at the first argument that does not start with --. $options_given lists the variables
# set on the command line.
for ((__argpos = 1; __argpos < $#; __argpos++)); do
  if [ "${!__argpos}" == "--config" ]; then
    __next=$((__argpos + 1))
    __config="${!__next}"
    [ -r "$__config" ] || { echo "$0: cannot read config file '$__config'" >&2; exit 1; }
    . "$__config"
  fi
done
while true; do
  [ -z "${1:-}" ] && break
  case "$1" in
    --help | -h)
      echo -e "${help_message:-no help for $0}"
      exit 0 ;;
    --config)
      [ $# -ge 2 ] || { echo "$0: --config needs a file" >&2; exit 1; }
      shift 2 ;;
    --*=*)
      echo "$0: options take their value as a separate argument: use '${1%%=*} ${1#*=}'" >&2
      exit 1 ;;
    --*)
      __name=$(echo "${1#--}" | tr '-' '_')
      if ! [[ "$__name" =~ ^[a-zA-Z_][a-zA-Z0-9_]*$ ]] || [ -z "${!__name+set}" ]; then
        echo "$0: unknown option $1 (see $0 --help)" >&2
        exit 1
      fi
      [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }
      __old="${!__name}"
      if [[ "$__old" == "true" || "$__old" == "false" ]] && [[ "$2" != "true" && "$2" != "false" ]]; then
        echo "$0: option $1 takes true or false, got '$2'" >&2
        exit 1
      fi
      printf -v "$__name" '%s' "$2"
      options_given="${options_given:-} $__name"
      shift 2 ;;
    *) break ;;
  esac
done
unset __argpos __next __config __name __old
true
