"""python-jenkins (behaviour §8), unchanged, through crumb-proxy, without credentials.

python-jenkins fetches a crumb once and never refreshes it (§8): on its own,
every POST after a session expiry fails. Through the proxy it must not notice.
"""

import jenkins

from harness import URL, expect, expire_sessions, fail, freestyle, result, step, wait_until

JOB = "pj-job"

server = jenkins.Jenkins(URL, timeout=30)

me = server.get_whoami()
step(f"get_whoami: {me['id']} ({me['fullName']})")
expect(me["id"] == "alice", f"get_whoami says {me}")

names = [j["name"] for j in server.get_jobs()]
step(f"get_jobs: {names}")
expect("sample-job" in names and JOB not in names, f"jobs: {names}")

v1 = freestyle("made by python-jenkins", ["echo one: $GREETING"], [("GREETING", "hi")])
server.create_job(JOB, v1)
step(f"create_job {JOB}")
expect(server.job_exists(JOB), "the job exists after create_job")
expect(server.get_job_config(JOB) == v1, "get_job_config returns the created XML")

v2 = v1.replace("echo one: $GREETING", "echo two: $GREETING")
server.reconfig_job(JOB, v2)
step(f"reconfig_job {JOB}")
expect(server.get_job_config(JOB) == v2, "get_job_config returns the new XML")

info = server.get_job_info(JOB)
definitions = [
    d["name"]
    for p in info["property"]
    if "parameterDefinitions" in p
    for d in p["parameterDefinitions"]
]
expect(definitions == ["GREETING"], f"parameter definitions: {definitions}")
expect(info["url"] == f"{URL}job/{JOB}/", f"the job's url is the proxy's: {info['url']}")

# The crumb python-jenkins keeps for the life of this object.
client_crumb = server.crumb["crumb"] if server.crumb else None
expect(client_crumb, "python-jenkins fetched a crumb through the proxy")

expire_sessions()

queue_id = server.build_job(JOB, {"GREETING": "from python-jenkins"})
step(f"build_job {JOB}: queue item {queue_id}")


def left_queue():
    item = server.get_queue_item(queue_id)
    return item if "executable" in item and item["executable"] else None


item = wait_until("the queue item to leave the queue", left_queue)
number = item["executable"]["number"]
expect(
    item["executable"]["url"] == f"{URL}job/{JOB}/{number}/",
    f"the build's url is the proxy's: {item['executable']['url']}",
)
step(f"get_queue_item {queue_id}: build #{number}")

build = wait_until(
    "the build to finish",
    lambda: (lambda b: b if not b["building"] else None)(server.get_build_info(JOB, number)),
)
expect(build["result"] == "SUCCESS", f"build result: {build['result']}")
expect(build["queueId"] == queue_id, f"the build's queueId: {build['queueId']}")

console = server.get_build_console_output(JOB, number)
step(f"get_build_console_output #{number}: {len(console)} characters")
for line in ("GREETING=from python-jenkins", "two: from python-jenkins", "Finished: SUCCESS"):
    expect(line in console, f"the console has {line!r}:\n{console}")
expect("\x1b" not in console, "console notes are removed")

server.delete_job(JOB)
step(f"delete_job {JOB}")
if server.job_exists(JOB):
    fail("the job still exists after delete_job")

result(
    client_crumbs=[client_crumb],
    triggers={JOB: 1},
    builds=[{"job": JOB, "number": number, "queue_id": queue_id,
             "params": {"GREETING": "from python-jenkins"}}],
    deleted=[JOB],
    configs={JOB: v2},
)
