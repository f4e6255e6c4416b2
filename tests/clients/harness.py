"""What every Python client script of tests/clients shares.

The scripts are run by tests/it/clients.rs with the virtualenv's python, with
the proxy's root URL in CRUMB_PROXY_URL and nothing else: no user, password,
token, crumb or cookie. They talk to Jenkins only through that URL, print
what they do, exit non-zero at the first unexpected answer, and speak two
lines of protocol with the test on stdout/stdin:

  @@expire-sessions      the test expires every Jenkins session (as the
                         30-minute idle timeout would) and answers "expired"
  @@result {json}        what the client saw, for the test to compare with
                         what Jenkins recorded
"""

import json
import os
import sys
import time
from xml.sax.saxutils import escape

URL = os.environ["CRUMB_PROXY_URL"]
if not URL.endswith("/"):
    URL += "/"

for name in os.environ:
    if any(word in name.upper() for word in ("PASSWORD", "TOKEN", "JENKINS_USER")):
        sys.exit(f"the client must run without credentials, but {name} is set")


def step(message):
    print(f"- {message}", flush=True)


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def expect(condition, message):
    if not condition:
        fail(message)


def expire_sessions():
    """Has the test expire every Jenkins session; the next POST meets a stale crumb."""
    print("@@expire-sessions", flush=True)
    answer = sys.stdin.readline().strip()
    expect(answer == "expired", f"the test answered {answer!r} to @@expire-sessions")
    step("Jenkins sessions expired")


def result(**fields):
    print("@@result " + json.dumps(fields, sort_keys=True), flush=True)


def wait_until(what, probe, timeout=30.0, interval=0.2):
    """Calls probe() until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            fail(f"timed out waiting for {what}")
        time.sleep(interval)


def freestyle(description, commands, string_params=(), file_params=()):
    """A freestyle project's config.xml: string and file parameters, shell steps."""
    params = ""
    if string_params or file_params:
        defs = "".join(
            "<hudson.model.StringParameterDefinition>"
            f"<name>{escape(name)}</name><description></description>"
            f"<defaultValue>{escape(default)}</defaultValue><trim>false</trim>"
            "</hudson.model.StringParameterDefinition>"
            for name, default in string_params
        ) + "".join(
            "<hudson.model.FileParameterDefinition>"
            f"<name>{escape(name)}</name><description></description>"
            "</hudson.model.FileParameterDefinition>"
            for name in file_params
        )
        params = (
            "<hudson.model.ParametersDefinitionProperty><parameterDefinitions>"
            f"{defs}</parameterDefinitions></hudson.model.ParametersDefinitionProperty>"
        )
    builders = "".join(
        f"<hudson.tasks.Shell><command>{escape(c)}</command></hudson.tasks.Shell>"
        for c in commands
    )
    return (
        "<?xml version='1.1' encoding='UTF-8'?>\n<project>\n"
        f"  <description>{escape(description)}</description>\n"
        "  <keepDependencies>false</keepDependencies>\n"
        f"  <properties>{params}</properties>\n"
        "  <scm class=\"hudson.scm.NullSCM\"/>\n"
        "  <canRoam>true</canRoam>\n  <disabled>false</disabled>\n"
        f"  <builders>{builders}</builders>\n"
        "  <publishers/>\n  <buildWrappers/>\n</project>\n"
    )
