#!/usr/bin/env bash
# Java (for Gremlin Server and ElasticMQ) and Maven (to fetch them from Maven Central) are the only
# non-Python prerequisites. Installed from Debian's packages when missing and we may; otherwise a clear error.
set -euo pipefail
need=()
java_ok() { command -v java >/dev/null 2>&1 && java -version 2>&1 | grep -Eq 'version "(1[1-9]|2[0-9])'; }
java_ok || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
else
  echo "error: missing ${need[*]} (Java 11+ and Maven are needed for the local Gremlin Server and ElasticMQ);" >&2
  echo "       install them with your package manager and re-run." >&2
  exit 1
fi
