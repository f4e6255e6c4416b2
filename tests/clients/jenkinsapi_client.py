"""jenkinsapi (behaviour §8), unchanged, through crumb-proxy, without credentials.

jenkinsapi reads `api/python` (evaluated as a Python literal), follows the
absolute `url` fields Jenkins returns, and retries a POST once with a fresh
crumb on any 403. Through the proxy it never sees the 403 at all.
"""

from jenkinsapi.jenkins import Jenkins

from harness import URL, expect, expire_sessions, freestyle, result, step

JOB = "japi-job"

server = Jenkins(URL.rstrip("/"), timeout=30)

names = list(server.keys())
step(f"jobs: {names}")
expect("sample-job" in names and JOB not in names, f"jobs: {names}")

xml = freestyle("made by jenkinsapi", ["echo japi: $GREETING"], [("GREETING", "hi")])
job = server.create_job(JOB, xml)
step(f"create_job {JOB}")
expect(server.has_job(JOB), "has_job after create_job")
job = server.get_job(JOB)
expect(job.has_params() and job.get_params_list() == ["GREETING"],
       f"parameters: {job.get_params_list()}")
expect(job.baseurl == f"{URL}job/{JOB}", f"the job's url is the proxy's: {job.baseurl}")

crumb_data = server.requester._last_crumb_data
expect(crumb_data, "jenkinsapi fetched a crumb through the proxy for create_job")
client_crumb = next(iter(crumb_data.values()))

expire_sessions()

queue_item = job.invoke(build_params={"GREETING": "from jenkinsapi"})
step(f"invoke {JOB}: {queue_item.baseurl}")
expect(queue_item.baseurl.startswith(f"{URL}queue/item/"),
       f"the queue item is the proxy's: {queue_item.baseurl}")
queue_id = queue_item.queue_id

build = queue_item.block_until_building(delay=0.2)
number = build.get_number()
step(f"queue item {queue_id} is building #{number}")
build.block_until_complete(delay=0.2)
build.poll()  # block_until_complete only polls `tree=building`
expect(build.get_status() == "SUCCESS", f"status {build.get_status()}")
expect(build.get_params() == {"GREETING": "from jenkinsapi"}, f"params {build.get_params()}")
expect(build.baseurl == f"{URL}job/{JOB}/{number}", f"the build's url: {build.baseurl}")

console = build.get_console()
step(f"console of #{number}: {len(console)} characters")
for line in ("Started by user alice", "japi: from jenkinsapi", "Finished: SUCCESS"):
    expect(line in console, f"the console has {line!r}:\n{console}")
streamed = "".join(build.stream_logs())
expect(streamed == console, f"stream_logs gives the console:\n{streamed}")

# The second crumb jenkinsapi holds, if it fetched one: it never had to.
expect(server.requester._last_crumb_data == crumb_data,
       "jenkinsapi never saw a 403, so it never refetched its crumb")

del server.jobs[JOB]
step(f"deleted {JOB}")
server.jobs.poll()
expect(not server.has_job(JOB), "the job is gone")

result(
    client_crumbs=[client_crumb],
    triggers={JOB: 1},
    builds=[{"job": JOB, "number": number, "queue_id": queue_id,
             "params": {"GREETING": "from jenkinsapi"}}],
    deleted=[JOB],
    configs={JOB: xml},
)
