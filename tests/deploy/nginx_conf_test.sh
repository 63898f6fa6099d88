#!/usr/bin/env bash
# The shipped NGINX configuration renders and passes `nginx -t`, for one instance and for
# several, and the renderer refuses an instance address that is not host:port.
set -euo pipefail
src=${1:?usage: nginx_conf_test.sh SOURCE_DIR}
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x "$nginx_bin" ]] || { echo "FAIL: nginx is not installed (scripts/install-deps installs it)" >&2; exit 1; }
dir=$(mktemp -d /tmp/catwalk-nginx-conf-XXXXXX)
trap 'rm -rf "$dir"' EXIT

check() {  # RUN_DIR INSTANCE...
  local run=$1; shift
  "$src/deploy/nginx/render" "$run" 127.0.0.1:18080 "$@"
  "$nginx_bin" -t -q -p "$run" -c "$run/nginx.conf" -e "$run/nginx-error.log" \
    || { echo "FAIL: nginx -t rejects the configuration rendered for: $*" >&2; exit 1; }
  for s in "$@"; do
    grep -qF "server $s max_fails=" "$run/catwalk.conf" || { echo "FAIL: $s missing from the upstream" >&2; exit 1; }
  done
}
check "$dir/one" 127.0.0.1:3101
check "$dir/three" 127.0.0.1:3101 127.0.0.1:3102 '[::1]:3103'

if "$src/deploy/nginx/render" "$dir/bad" 127.0.0.1:18080 'evil; include /etc/passwd:1' 2>/dev/null; then
  echo "FAIL: the renderer accepted an instance address with a semicolon" >&2; exit 1
fi
# What scripts/cluster relies on: POSTs are never retried on another instance.
if grep -Eq '^\s*proxy_next_upstream\s[^;]*non_idempotent' "$dir/three/catwalk.conf"; then
  echo "FAIL: proxy_next_upstream must not retry non-idempotent requests" >&2; exit 1
fi
# What --warm-wait relies on: an instance that refuses connections (still warming) is passed
# over, and taken out for a while after a few refusals.
grep -Eq '^\s*proxy_next_upstream\s+error[ ;]' "$dir/three/catwalk.conf" \
  || { echo "FAIL: proxy_next_upstream must pass a refused request to the next instance" >&2; exit 1; }
grep -Eq 'max_fails=[1-9][0-9]* fail_timeout=' "$dir/three/catwalk.conf" \
  || { echo "FAIL: the upstream servers need max_fails and fail_timeout" >&2; exit 1; }
echo "ok: nginx -t accepts the rendered configuration"
