#!/usr/bin/env bash
# System packages the tests use: Debian's chromium and chromedriver (the dashboard test drives a
# real headless browser; Playwright's own download is not reachable here) and curl (the API's
# error cases), and for the NAT testbed (tests/nat_testbed.py) iproute2, nftables and miniupnpd.
# Installed with apt-get when missing and running as root, as CI does; otherwise the
# tests that need them are skipped with a reason.
set -uo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v curl >/dev/null || missing+=(curl)
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
command -v miniupnpd >/dev/null || missing+=(miniupnpd-nftables)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} (apt-get) for the dashboard, API and NAT tests..." >&2
  log=$(mktemp)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
    tail -5 "$log" >&2
    echo "warning: apt-get could not install ${missing[*]}; the tests that need them are skipped" >&2
  fi
else
  echo "note: ${missing[*]} missing and not root: the tests that need them are skipped" >&2
fi
exit 0
