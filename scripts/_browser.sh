# Sourced by scripts/test: the web page's end-to-end tests drive Debian's Chromium (Playwright never downloads
# a browser here). As root with apt-get, a missing chromium (and a CJK font, so screenshots show Chinese) is
# installed quietly; elsewhere nothing is installed and those tests skip, saying how to get a browser.
ensure_browser() {
  if command -v chromium >/dev/null 2>&1 || [ -n "${CHROMIUM_PATH:-}" ]; then
    return 0
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts: no chromium; the web page tests will skip (apt-get install chromium, or set CHROMIUM_PATH)" >&2
    return 0
  fi
  echo "scripts: installing Debian's chromium for the web page tests" >&2
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei; } \
    >/tmp/scripts-apt-chromium.log 2>&1; then
    echo "scripts: installing chromium failed (see /tmp/scripts-apt-chromium.log); the web page tests will skip" >&2
  fi
}
