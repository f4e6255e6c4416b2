#!/usr/bin/env bash
# GNU wget through crumb-proxy, with no credentials, crumb or cookie of its
# own: the tutorial flows of behaviour §12 as wget users write them
# (--post-data, --header with the XPath crumb, --save-cookies), a job created
# from XML with --post-file and its config.xml round trip, and after a forced
# session expiry a parameterized build, its console, and doDelete, whose 302
# wget follows to the dashboard.
#
# Run by tests/it/clients.rs with the proxy's root URL in CRUMB_PROXY_URL;
# talks to the test with `@@expire-sessions` / `@@result {json}` lines
# (tests/clients/harness.py describes them) and exits non-zero at the first
# unexpected answer.
set -euo pipefail

J="${CRUMB_PROXY_URL%/}/"
JOB=wget-job

step() { echo "- $*"; }
fail() {
  echo "FAILED: $*" >&2
  exit 1
}
expect_eq() { [ "$1" = "$2" ] || fail "$3: got '$1', want '$2'"; }
expect_has() {
  case "$1" in
    *"$2"*) ;;
    *) fail "$3: no '$2' in: $1" ;;
  esac
}
w() { wget --no-config --no-verbose --timeout=30 --tries=1 "$@"; }
get() { w -O - "$1"; }
# POSTs; prints `STATUS LOCATION` of the first response (wget -S output).
post() {
  local out
  out=$(w -S -O /dev/null --max-redirect=0 "$@" 2>&1) || true
  printf '%s %s\n' \
    "$(sed -n 's/^  HTTP\/1.1 \([0-9]*\).*/\1/p' <<<"$out" | head -1)" \
    "$(sed -n 's/^  [Ll]ocation: \(.*\)$/\1/p' <<<"$out" | head -1)"
}
expire_sessions() {
  echo "@@expire-sessions"
  read -r answer
  expect_eq "$answer" expired "the test's answer to @@expire-sessions"
  step "Jenkins sessions expired"
}
wait_for_build() {
  local item=$1 json executable
  for _ in $(seq 150); do
    json=$(get "${item}api/json")
    executable=$(sed -n 's/.*"executable":{"_class":"[^"]*","number":\([0-9]*\),"url":"\([^"]*\)".*/\1 \2/p' <<<"$json")
    if [ -n "$executable" ]; then
      echo "$executable"
      return
    fi
    sleep 0.2
  done
  fail "queue item $item never left the queue: $json"
}
wait_until_complete() {
  for _ in $(seq 150); do
    case "$(get "${1}api/json?tree=building")" in
      *'"building":false'*) return ;;
    esac
    sleep 0.2
  done
  fail "$1 never completed"
}
queue_id() { sed -n 's|.*/queue/item/\([0-9]*\)/$|\1|p' <<<"$1"; }

body=$(get "${J}api/json?pretty=true")
expect_has "$body" '"numExecutors" : 2' "flow 1"
expect_has "$body" "\"url\" : \"${J}job/sample-job/\"" "flow 1: the job's url"
step "flow 1: wget -O - api/json?pretty=true"

read -r status location < <(post --post-data '' "${J}job/sample-job/build")
expect_eq "$status" 201 "flow 2"
expect_has "$location" "${J}queue/item/" "flow 2: Location leads to the proxy"
queue_sample=$location
step "flow 2: --post-data '' job/sample-job/build -> $status $location"

# The XPath's quotes encoded: see curl.sh and clients::tutorial_xpath_with_raw_quotes.
header=$(get "${J}crumbIssuer/api/xml?xpath=concat(//crumbRequestField,%22:%22,//crumb)")
[[ $header =~ ^Jenkins-Crumb:[0-9a-f]{64}$ ]] || fail "flow 3: the XPath crumb: $header"
crumb=${header#Jenkins-Crumb:}
w -O /dev/null --save-cookies cookies --keep-session-cookies "${J}crumbIssuer/api/json"
if grep -q JSESSIONID cookies; then fail "flow 3: a Jenkins session cookie reached the client"; fi
read -r status location < <(post --load-cookies cookies --header "$header" \
  --post-data '' "${J}job/sample-job/build?delay=0sec")
expect_eq "$status $location" "201 $queue_sample" "flow 3"
step "flow 3: --header '$header' (and an empty cookie jar) -> $status, folded into $location"

read -r sample_number sample_url < <(wait_for_build "$queue_sample")
wait_until_complete "$sample_url"
expect_has "$(get "${sample_url}consoleText")" "Finished: SUCCESS" "sample-job console"
step "sample-job #$sample_number ran"

cat >job.xml <<'XML'
<?xml version='1.1' encoding='UTF-8'?>
<project>
  <description>made by wget</description>
  <properties>
    <hudson.model.ParametersDefinitionProperty>
      <parameterDefinitions>
        <hudson.model.StringParameterDefinition>
          <name>GREETING</name>
          <defaultValue>hello</defaultValue>
        </hudson.model.StringParameterDefinition>
      </parameterDefinitions>
    </hudson.model.ParametersDefinitionProperty>
  </properties>
  <builders>
    <hudson.tasks.Shell>
      <command>echo one: $GREETING</command>
    </hudson.tasks.Shell>
  </builders>
</project>
XML
read -r status _ < <(post --header 'Content-Type: application/xml' --post-file job.xml \
  "${J}createItem?name=$JOB")
expect_eq "$status" 200 "createItem"
w -O config.xml "${J}job/$JOB/config.xml"
cmp -s config.xml job.xml || fail "config.xml is not what was created"
sed 's/echo one:/echo two:/' config.xml >config2.xml
read -r status _ < <(post --header 'Content-Type: application/xml' --post-file config2.xml \
  "${J}job/$JOB/config.xml")
expect_eq "$status" 200 "POST config.xml"
w -O config3.xml "${J}job/$JOB/config.xml"
cmp -s config2.xml config3.xml || fail "config.xml after the POST: $(cat config3.xml)"
step "createItem --post-file, config.xml GET, --post-file back -> $status, GET gives the change"

expire_sessions

read -r status location < <(post --post-data 'GREETING=from+wget' \
  "${J}job/$JOB/buildWithParameters")
expect_eq "$status" 201 "buildWithParameters"
queue_job=$location
read -r job_number job_url < <(wait_for_build "$queue_job")
expect_eq "$job_url" "${J}job/$JOB/$job_number/" "the build's url"
wait_until_complete "$job_url"
console=$(get "${job_url}consoleText")
expect_has "$console" $'GREETING=from wget' "the parameter"
expect_has "$console" $'+ echo two: $GREETING\ntwo: from wget' "the changed shell step"
step "buildWithParameters --post-data GREETING=from+wget -> $status; #$job_number ran the changed step"

# doDelete answers 302 to the root; wget follows it (as a GET) to the dashboard.
out=$(w -S -O dashboard.html --post-data '' "${J}job/$JOB/doDelete" 2>&1) ||
  fail "doDelete: $out"
expect_has "$out" "  HTTP/1.1 302" "doDelete"
expect_has "$out" "ocation: $J" "doDelete redirects to the root, on the proxy"
expect_has "$(cat dashboard.html)" "Dashboard" "the page wget followed to"
if w -O /dev/null "${J}job/$JOB/api/json" 2>/dev/null; then fail "the job still exists"; fi
step "doDelete -> 302 $J, followed to the dashboard; the job is gone"

json_file() {
  local s
  s=$(<"$1")
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  printf '"%s\\n"' "$s"
}
echo "@@result {\"client_crumbs\": [\"$crumb\"]," \
  "\"triggers\": {\"sample-job\": 2, \"$JOB\": 1}," \
  "\"builds\": [{\"job\": \"sample-job\", \"number\": $sample_number, \"queue_id\": $(queue_id "$queue_sample")}," \
  "{\"job\": \"$JOB\", \"number\": $job_number, \"queue_id\": $(queue_id "$queue_job")," \
  "\"params\": {\"GREETING\": \"from wget\"}}]," \
  "\"deleted\": [\"$JOB\"], \"configs\": {\"$JOB\": $(json_file config2.xml)}}"
