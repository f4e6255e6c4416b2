"""api4jenkins (httpx based), unchanged, through crumb-proxy, without credentials.

api4jenkins fetches a crumb once, adds it to every request, and picks its
Python classes from the `_class` of what `tree=` queries return; it follows
the absolute `url` fields Jenkins returns.
"""

from api4jenkins import Jenkins

from harness import URL, expect, expire_sessions, freestyle, result, step, wait_until

JOB = "a4j-job"

server = Jenkins(URL, timeout=30)

version = server.version
step(f"version: {version}")
expect(version == "2.541.3", f"X-Jenkins: {version}")

names = [job.full_name for job in server.iter()]
step(f"jobs: {names}")
expect("sample-job" in names and JOB not in names, f"jobs: {names}")

v1 = freestyle("made by api4jenkins", ["echo one: $GREETING"], [("GREETING", "hi")])
server.create_job(JOB, v1)
step(f"create_job {JOB}")
job = server.get_job(JOB)
expect(job is not None, "get_job after create_job")
expect(type(job).__name__ == "FreeStyleProject", f"the job's class: {type(job).__name__}")
expect(job.url == f"{URL}job/{JOB}/", f"the job's url is the proxy's: {job.url}")
expect(job.configure() == v1, "configure() returns the created XML")
v2 = v1.replace("echo one:", "echo two:")
job.configure(v2)
step("configure(xml)")
expect(job.configure() == v2, "configure() returns the new XML")
expect([p["name"] for p in job.get_parameters()] == ["GREETING"], "parameter definitions")

client_crumb = next(iter(server.crumb.values()))

expire_sessions()

item = job.build(GREETING="from api4jenkins")
step(f"build {JOB}: {item.url}")
expect(item.url.startswith(f"{URL}queue/item/"), f"the queue item is the proxy's: {item.url}")
queue_id = item.id

wait_until("the queue item to leave the queue", lambda: item._class.endswith("$LeftItem"))
build = item.get_build()
number = build.number
step(f"queue item {queue_id} became #{number}: {build.url}")
expect(type(build).__name__ == "FreeStyleBuild", f"the build's class: {type(build).__name__}")
wait_until("the build to finish", lambda: not build.building)
expect(build.result == "SUCCESS", f"result {build.result}")
expect([(p.name, p.value) for p in build.get_parameters()] == [("GREETING", "from api4jenkins")],
       f"parameters {build.get_parameters()}")

lines = list(build.console_text())
step(f"console_text of #{number}: {len(lines)} lines")
for line in ("GREETING=from api4jenkins", "two: from api4jenkins", "Finished: SUCCESS"):
    expect(line in lines, f"the console has {line!r}: {lines}")
progressive = list(build.progressive_output())
expect(progressive == lines, f"progressive_output gives the console: {progressive}")

job.delete()
step(f"delete {JOB}")
expect(server.get_job(JOB) is None, "the job is gone")

result(
    client_crumbs=[client_crumb],
    triggers={JOB: 1},
    builds=[{"job": JOB, "number": number, "queue_id": queue_id,
             "params": {"GREETING": "from api4jenkins"}}],
    deleted=[JOB],
    configs={JOB: v2},
)
