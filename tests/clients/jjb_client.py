"""jenkins-job-builder, unchanged, through crumb-proxy, without credentials.

Runs the real `jenkins-jobs` command line of the virtualenv: `update` of two
jobs from YAML (which asks the plugin manager, creates both jobs, and fetches
a crumb through python-jenkins), then, after the session expiry, `update` of
a changed YAML (JJB's cache leaves the unchanged job alone and reconfigures
the other), `list`, and `delete` of one job. JJB has no build command; what
Jenkins keeps is compared with `jenkins-jobs test` of the same YAML.
"""

import os
import subprocess
import sys
import urllib.request

from harness import URL, expect, expire_sessions, result, step

JOBS = ["jjb-one", "jjb-two"]
JJB = os.path.join(os.path.dirname(sys.executable), "jenkins-jobs")


def yaml(two_says):
    return f"""
- job:
    name: jjb-one
    description: made by jenkins-job-builder
    parameters:
      - string:
          name: GREETING
          default: hello
    builders:
      - shell: 'echo one: $GREETING'

- job:
    name: jjb-two
    description: made by jenkins-job-builder too
    builders:
      - shell: echo {two_says}
"""


with open("jjb.ini", "w") as f:
    f.write(f"[job_builder]\nignore_cache=False\n\n[jenkins]\nurl={URL}\nquery_plugins_info=True\n")


def jjb(*args):
    out = subprocess.run([JJB, "--conf", "jjb.ini", *args], capture_output=True, text=True)
    step(f"jenkins-jobs {' '.join(args)} -> {out.returncode}")
    for line in (out.stdout + out.stderr).splitlines():
        print(f"    {line}", flush=True)
    expect(out.returncode == 0, f"jenkins-jobs {' '.join(args)} failed")
    return out.stdout + out.stderr


def generated(yaml_text, name):
    """What `jenkins-jobs test` makes of the YAML, without any server."""
    with open("jobs.yaml", "w") as f:
        f.write(yaml_text)
    os.makedirs("out", exist_ok=True)
    jjb("test", "--config-xml", "jobs.yaml", "-o", "out")
    with open(os.path.join("out", name, "config.xml")) as f:
        return f.read()


def served(name):
    """The job's config.xml as Jenkins serves it, read through the proxy."""
    with urllib.request.urlopen(f"{URL}job/{name}/config.xml", timeout=30) as r:
        expect(r.status == 200, f"config.xml of {name}: {r.status}")
        return r.read().decode("utf-8")


first = yaml("first")
want_one, want_two = generated(first, "jjb-one"), generated(first, "jjb-two")
log = jjb("update", "jobs.yaml")
expect("Number of jobs updated: 2" in log, "both jobs were created")
expect(served("jjb-one") == want_one, "Jenkins keeps jjb-one as generated")
expect(served("jjb-two") == want_two, "Jenkins keeps jjb-two as generated")

expire_sessions()

second = yaml("second")
# On updating a job that exists, JJB keeps its enabled state: it reads the
# job's `disabled` from the API and writes it into the XML (fix_disabled).
want_two = generated(second, "jjb-two").replace(
    "</project>", "  <disabled>false</disabled>\n</project>"
)
expect(generated(second, "jjb-one") == want_one, "jjb-one did not change")
log = jjb("update", "jobs.yaml")
expect("Number of jobs updated: 1" in log, "only the changed job was updated")
got = served("jjb-two")
expect(got == want_two, f"Jenkins keeps the new jjb-two:\n{got}\nwant:\n{want_two}")

listed = jjb("list")
for name in JOBS:
    expect(name in listed.split(), f"jenkins-jobs list shows {name}")

jjb("delete", "jjb-one")
listed = jjb("list")
expect("jjb-one" not in listed.split() and "jjb-two" in listed.split(),
       f"after delete: {listed}")

result(
    triggers={},
    builds=[],
    deleted=["jjb-one"],
    configs={"jjb-two": want_two},
)
