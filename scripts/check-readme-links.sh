#!/usr/bin/env bash
# make docs: every relative link of the READMEs names a file of the repository (the
# book's own links are linkchecker's job).
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for readme in README.md clients/typescript/README.md; do
  dir=$(dirname "$readme")
  while IFS= read -r target; do
    path=${target%%#*}
    [ -z "$path" ] && continue
    if [ ! -e "$dir/$path" ]; then
      echo "$readme: broken link $target" >&2
      status=1
    fi
  done < <(grep -o '](\([^)]*\))' "$readme" | sed 's/^](\(.*\))$/\1/' | grep -v '^[a-z]*://')
done
[ "$status" -eq 0 ] && echo "README links: all present"
exit "$status"
