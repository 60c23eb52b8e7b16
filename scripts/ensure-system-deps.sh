#!/usr/bin/env bash
# Java (for Gremlin Server and ElasticMQ) and Maven (to fetch them from Maven Central) are the only
# non-Python prerequisites. Installed from Debian's packages when missing and we may; otherwise a clear error.
# Headless Chromium and its driver (the review console's browser tests) come from Debian's packages too;
# without them (and no way to install them) the install goes on and those tests are skipped, with a warning.
set -euo pipefail
need=()
want=()
java_ok() { command -v java >/dev/null 2>&1 && java -version 2>&1 | grep -Eq 'version "(1[1-9]|2[0-9])'; }
java_ok || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v chromedriver >/dev/null 2>&1 || want+=(chromium-driver)
all=("${need[@]}" "${want[@]}")
if [ ${#all[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${all[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${all[@]}"
  exit 0
fi
if [ ${#want[@]} -gt 0 ]; then
  echo "warning: missing ${want[*]}: the review console's browser tests will be skipped" >&2
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "error: missing ${need[*]} (Java 11+ and Maven are needed for the local Gremlin Server and ElasticMQ);" >&2
  echo "       install them with your package manager and re-run." >&2
  exit 1
fi
