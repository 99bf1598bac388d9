#!/usr/bin/env bash
# Helpers for recipe stages (source after utils/parse_options.sh).
# log STAGE MESSAGE...         timestamped line
# done_or_run DIR STAGE        false (and says so) when DIR/.done exists, so a finished stage is skipped
# need PATH STAGE              exits naming the stage to run first when PATH is missing
# name PART                    LibriSpeech part name -> data dir name (dashes to underscores)
# check_stages S E FIRST LAST  --stage/--stop_stage are integers with FIRST <= S <= E <= LAST
# from_caller VAR...           a relative path given as --VAR on the command line is made absolute from
#                              the directory run.sh was started in ($caller_dir), unless it exists only
#                              relative to the recipe (e.g. --codec_config conf/codec_base.yaml)
log() { echo "$(date '+%F %T') [stage $1] ${*:2}"; }
done_or_run() { [ -f "$1/.done" ] && { log "$2" "$1 is done, skipping"; return 1; }; return 0; }
need() { [ -e "$1" ] || { echo "$0: $1 is missing: run stage $2 first (--stage $2)" >&2; exit 1; }; }
name() { echo "$1" | tr '-' '_'; }
check_stages() {
  local v
  for v in "$1" "$2"; do
    [[ "$v" =~ ^[0-9]+$ ]] || { echo "$0: --stage and --stop_stage must be integers in $3..$4, got '$v'" >&2; exit 1; }
  done
  if [ "$1" -lt "$3" ] || [ "$2" -gt "$4" ] || [ "$1" -gt "$2" ]; then
    echo "$0: stages run from --stage $1 to --stop_stage $2; both must lie in $3..$4, stage <= stop_stage" >&2
    exit 1
  fi
}
from_caller() {
  local v
  for v in "$@"; do
    [[ " ${options_given:-} " == *" $v "* ]] && [ -n "${!v}" ] && [[ "${!v}" != /* ]] || continue
    [ -e "$caller_dir/${!v}" ] || [ ! -e "${!v}" ] || continue
    printf -v "$v" '%s' "$caller_dir/${!v}"
  done
}
