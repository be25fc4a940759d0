# Free-space checks, sourced by scripts/test before it installs or builds
# anything: a full disk otherwise fails deep inside a link (the linker dies
# with SIGBUS) or a container, long after the cause.
# shellcheck shell=bash

# need_room PATH MB WHAT: exits 1 with one line naming the filesystem, what
# is free and what is needed when PATH's filesystem has less than MB free.
need_room() {
  local free
  free=$(df -Pm "$1" 2>/dev/null | awk 'NR == 2 {print $4}')
  if [ -n "$free" ] && [ "$free" -lt "$2" ]; then
    printf '==> %s\n' "not enough disk for $3: $free MB free on $(df -P "$1" | awk 'NR == 2 {print $6}') ($1), about $2 MB needed; free some space or set TEST_MIN_FREE_MB=0 to try anyway" >&2
    exit 1
  fi
}
